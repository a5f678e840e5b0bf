"""How the conversation answers a playground visitor: `PlaygroundReplier` (bots/contract.py's `Replier`).

A chat replier posts messages; a browser asks instead. So this replier keeps what the conversation said:
- for the page request that is waiting on it (`imagine`, a button): the refusal, the status (held for review), the
  delivery (U: that image alone), which the request handler turns into its answer;
- for later, in the `Board` (this process's memory, bounded): notices (a moderator's decision, a refusal that came
  after the request) shown on the visitor's next page, and which job each request became (a held prompt becomes a
  job only when a moderator approves it).
What a visitor's page shows of a job (progress, images, seeds) is read from the job queue and the job store, not
from here: it is the same after a restart, in every process.

The place journaled with a job is `{"visitor": <id>, "ticket": <id of the request>}`: after a restart
`replier_for(place)` answers the same visitor about the same request. One more fact is journaled with a job, as
chat platforms keep it in their posted messages: that a moderator released the originals of images the image
filter withheld (`released_originals`), so that its page shows them from then on.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bots.buttons import Action, Button
from bots.contract import Delivery
from engine.api import JobQueue, JobRecord

MAX_VISITORS = 10_000
"""Visitors whose notices are kept (the least recently active are forgotten first)."""
NOTICES_PER_VISITOR = 5
MAX_TICKETS = 50_000
RELEASED_KEY = "web_released"
"""In a job's journaled delivery context: a moderator released its withheld images' originals."""


def released_originals(record: JobRecord) -> bool:
    return bool(record.request.delivery.get(RELEASED_KEY))


@dataclass(frozen=True)
class Place:
    visitor: str
    ticket: str

    def to_dict(self) -> dict[str, Any]:
        return {"visitor": self.visitor, "ticket": self.ticket}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Place:
        return cls(str(data.get("visitor") or ""), str(data.get("ticket") or ""))


@dataclass(frozen=True)
class Notice:
    text: str
    at: float
    ticket: str = ""


class Board:
    """What the conversation told visitors outside of a page request, kept for their next page (in memory)."""

    def __init__(self) -> None:
        self._notices: OrderedDict[str, deque[Notice]] = OrderedDict()
        self._jobs: OrderedDict[str, str] = OrderedDict()
        """ticket → the job it became."""
        self._decided: OrderedDict[str, str] = OrderedDict()
        """ticket → the last thing said about it (e.g. a moderator declined it)."""

    def notice(self, visitor: str, text: str, ticket: str = "") -> None:
        notices = self._notices.pop(visitor, None) or deque(maxlen=NOTICES_PER_VISITOR)
        notices.append(Notice(text, time.time(), ticket))
        self._notices[visitor] = notices
        _trim(self._notices, MAX_VISITORS)
        if ticket:
            _remember(self._decided, ticket, text)

    def take_notices(self, visitor: str) -> list[Notice]:
        """The visitor's notices, oldest first; each is shown once."""
        return list(self._notices.pop(visitor, ()))

    def job_started(self, ticket: str, job_id: str) -> None:
        _remember(self._jobs, ticket, job_id)

    def job_of(self, ticket: str) -> str | None:
        return self._jobs.get(ticket)

    def said_about(self, ticket: str) -> str | None:
        return self._decided.get(ticket)


class PlaygroundReplier:
    def __init__(self, board: Board, place: Place, jobs: JobQueue, *, answering: bool = False) -> None:
        self.board = board
        self.place = place
        self._jobs = jobs
        self.answering = answering
        """A page request waits for this replier's answer: refusals go to it rather than to the board."""
        self.refusals: list[str] = []
        self.statuses: list[str] = []
        self.deliveries: list[Delivery] = []
        self.deleted = False
        """Delete took the job's images down (its page, drawn from the job store, then says so)."""

    def done_answering(self) -> None:
        """The request has answered: whatever is said from now on is kept for the visitor's next page."""
        self.answering = False

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        # A job's status carries its Cancel button, which names the job: that is how a request learns the job it
        # became, also when that happens long after the request (a moderator approved a held prompt).
        for button in buttons:
            if button.action is Action.CANCEL:
                self.board.job_started(self.place.ticket, button.target)
        self.statuses.append(text)

    async def refuse(self, text: str) -> None:
        self.refusals.append(text)
        if not self.answering:
            self.board.notice(self.place.visitor, text, self.place.ticket)

    async def deliver(self, delivery: Delivery) -> None:
        """The images are on the job's page already (from the job store); a request for one image alone (U) is
        answered with that image's page; the originals of withheld images, released by a moderator, are
        journaled as released (the page shows them instead of the blurred copies)."""
        self.deliveries.append(delivery)
        record = await self._jobs.lookup(delivery.job_id)
        if record is None:
            return
        originals = {image.original_path for image in record.images if image.withheld and image.original_path}
        if any(attachment.path in originals for attachment in delivery.attachments):
            await self._jobs.update_delivery(record.id, {RELEASED_KEY: True})

    async def remove_pressed_message(self) -> None:
        """Delete (bots/contract.py's `RemovesPressedMessage`): the conversation removed the files and marked the
        job deleted; a page is not a posted message, so there is nothing more to take down."""
        self.deleted = True

    async def notify(self, text: str) -> None:
        self.board.notice(self.place.visitor, text, self.place.ticket)

    def journal_place(self) -> dict[str, Any] | None:
        return None  # the place never changes: it was journaled with the request


def _remember(mapping: OrderedDict[str, str], key: str, value: str) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    _trim(mapping, MAX_TICKETS)


def _trim(mapping: OrderedDict[str, Any], limit: int) -> None:
    while len(mapping) > limit:
        mapping.popitem(last=False)
