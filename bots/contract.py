"""The contract between the conversation and the adapters (bots/discord/, bots/slack/, bots/web/).

An adapter is built without side effects, `start()`s (connects, then registers its platform with the conversation
through `Conversation.add_platform`) and `close()`s; `async with adapter:` does both. For each requester it makes a
`Replier`, and for its moderators a `ModeratorChannel`; they only translate these calls into platform requests.
What the conversation journals with a job to answer later is a `ReplyContext`: the adapter's own JSON-able
description of the place (`Replier.journal_place()`, given back to `replier_for(place)` after a restart) beside
the conversation's own fields, which adapters never see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from bots.buttons import Button


@dataclass(frozen=True)
class Attachment:
    filename: str
    path: str
    """A JPEG on disk (read it in an executor, not on the event loop)."""
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Delivery:
    """The images message: text, the JPEG files, and rows of buttons (each row at most 5 buttons)."""

    job_id: str
    text: str
    attachments: tuple[Attachment, ...]
    button_rows: tuple[tuple[Button, ...], ...] = ()


class Replier(Protocol):
    """Talks to one requester in one place (a channel, a thread, a DM). Rebuilt after a restart from the
    journaled `delivery` context by the adapter's `replier_for(context)`."""

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        """Create the status message, or edit it if it exists (the conversation layer throttles calls)."""

    async def refuse(self, text: str) -> None:
        """Tell only the requester (ephemeral where the platform allows)."""

    async def deliver(self, delivery: Delivery) -> None:
        """Post the images message. Raise on failure: the conversation layer retries and records delivery only
        after this returns, so an adapter must not post twice for one successful call."""

    async def notify(self, text: str) -> None:
        """A plain message to the requester (e.g. a moderator's decision)."""

    def journal_place(self) -> dict[str, Any] | None:
        """Where this replier answers now, JSON-able (e.g. naming the status message it posted), or None when it
        has nothing worth journaling. The conversation journals it with the job when it changes, so that after a
        restart `replier_for(place)` edits that message rather than posting another."""


@runtime_checkable
class RemovesPressedMessage(Protocol):
    """A Replier made for a button press that can also take down the message the button was on (the Delete
    button): the platform's message and whatever it keeps of the attached files. Repliers without it cannot
    delete, and the conversation says so."""

    async def remove_pressed_message(self) -> None:
        """Remove the pressed message; a message already gone is no error (a Delete pressed twice)."""


@dataclass(frozen=True)
class ReviewPost:
    item_id: str
    text: str
    buttons: tuple[Button, ...]
    image_paths: tuple[str, ...] = ()
    """For image-screening hits: the withheld (blurred) images to show moderators."""
    meta: dict[str, Any] = field(default_factory=dict)
    channel: str = ""
    """Where to post it when not the platform's moderators' channel: a server's own (its admins' setting)."""


class ModeratorChannel(Protocol):
    async def post_review(self, post: ReviewPost) -> None: ...

    async def close_review(self, item_id: str, text: str, channel: str = "") -> None:
        """Update the posted review message: decided, by whom, buttons removed. `channel`: the server's own
        review channel it was posted in (`ReviewPost.channel`; empty: the moderators' channel), where it is
        looked for after a restart."""


RepliersFor = Callable[[dict[str, Any]], Replier]
"""An adapter's `replier_for(place)`: a Replier rebuilt from a journaled place."""


@dataclass(frozen=True)
class ReplyContext:
    """What a job carries to answer its requester later (journaled as `GenerationRequest.delivery`)."""

    place: dict[str, Any] = field(default_factory=dict)
    """The adapter's: channel, thread, interaction token, status message..."""
    intake_key: str = ""
    """The conversation's: the stored request (bots/intake.py) this job came from, to recognise a replay."""
    flagged_job: str = ""
    """The conversation's, on review items only: the job whose output images the image filter withheld."""

    def to_dict(self) -> dict[str, Any]:
        return {"place": dict(self.place), "intake_key": self.intake_key, "flagged_job": self.flagged_job}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplyContext:
        if isinstance(data.get("place"), dict):
            return cls(dict(data["place"]), str(data.get("intake_key") or ""), str(data.get("flagged_job") or ""))
        # Jobs journaled before the redesign kept one flat dict, the conversation's keys among the adapter's.
        place = {key: value for key, value in data.items() if key not in _LEGACY_KEYS}
        return cls(place, str(data.get("intake") or ""), str(data.get("flagged_job") or ""))


_LEGACY_KEYS = ("intake", "flagged_job")


class Adapter(Protocol):
    """A front door. The constructor only stores its arguments; `start()` connects and registers the platform
    with the conversation; `close()` undoes whatever `start()` did, also after a failed start."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


class AdapterLifecycle:
    """`async with` for adapters: start on enter, close on exit."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
