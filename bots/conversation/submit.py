"""A new prompt: validation, admission (limits, moderation, review), submitting to the job queue, and giving back
what admission counted when the job does not happen after all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bots import messages
from bots.contract import Replier, ReplyContext
from bots.conversation.follow import Follower
from bots.conversation.platforms import journal_place
from bots.conversation.render import cancel_buttons
from bots.conversation.servers import ServerSettingsStore
from bots.conversation.tasks import OwnedTasks
from bots.errors import PlaceUnreachable
from config.settings import Settings
from engine.api import JobQueue
from engine.errors import EngineClosed, InvalidRequest, QueueFull
from engine.requests import GenerationRequest, Requester
from engine.validation import prepare_record
from moderation.admission import Admission


@dataclass(frozen=True)
class ImagineCommand:
    prompt: str
    requester: Requester
    negative_prompt: str = ""
    seed: int | None = None
    aspect: str = "1:1"
    style: str = ""
    """A style preset's name as the user gave it ("" for the server's default style, if any)."""
    place: dict[str, Any] = field(default_factory=dict)
    """The adapter's JSON-able description of where to answer, even after a restart."""
    intake_key: str = ""
    """The stored request (bots/intake.py) this command came from, if any."""

    def to_request(self) -> GenerationRequest:
        context = ReplyContext(place=dict(self.place), intake_key=self.intake_key)
        return GenerationRequest(
            prompt=self.prompt,
            requester=self.requester,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            aspect=self.aspect,
            delivery=context.to_dict(),
        )


ReviewHook = Callable[[str, GenerationRequest, Sequence[str]], Awaitable[None]]
"""Posts a held prompt to the moderators: (review item id, request, reasons)."""


class Submitter:
    def __init__(
        self,
        settings: Settings,
        jobs: JobQueue,
        admission: Admission | None,
        follower: Follower,
        tasks: OwnedTasks,
        post_for_review: ReviewHook,
        servers: ServerSettingsStore,
    ) -> None:
        self._settings = settings
        self._servers = servers
        self._jobs = jobs
        self._admission = admission
        self._follower = follower
        self._tasks = tasks
        self._post_for_review = post_for_review
        self.followed_before_start: set[str] | None = set()
        """Jobs submitted (and already followed) while adapters ran before start(): start() skips them."""

    async def admit_and_submit(
        self, request: GenerationRequest, replier: Replier, is_moderator: bool = False
    ) -> str | None:
        """Admit and queue; the job id, or None when it was refused or held for review."""
        try:
            prepare_record(request, self._settings.engine)
        except InvalidRequest as exc:
            await replier.refuse(messages.invalid_request(str(exc)))
            return None
        if self._admission is not None:
            requester = request.requester
            server = await self._servers.get(requester.platform, requester.server_id)
            rules = server.rules(self._settings.limits)
            decision = await self._admission.check(request, is_moderator=is_moderator, rules=rules)
            if decision.review_item_id:
                await replier.show_status(decision.message or messages.WAITING_FOR_REVIEW)
                reasons = decision.verdict.reasons if decision.verdict else ()
                await self._post_for_review(decision.review_item_id, request, reasons)
                return None
            if not decision.admitted:
                await replier.refuse(decision.message)
                return None
        return await self.submit(request, replier)

    async def submit(self, request: GenerationRequest, replier: Replier, *, checked: bool = True) -> str | None:
        """Queue an admitted request and follow it. If the queue refuses it, or there is nowhere to answer,
        undo what admission counted (see `undo_admission`)."""
        try:
            job = await self._jobs.submit(request)
        except (QueueFull, EngineClosed, InvalidRequest) as exc:
            await self.undo_admission(request, checked)
            await replier.refuse(_queue_refusal(exc))
            return None
        if self.followed_before_start is not None:
            self.followed_before_start.add(job.id)
        status = self._follower.status_for(replier, job.request.prompt)
        try:
            await status.show_first(job.snapshot(), cancel_buttons(job.id))  # where they stand, before all else
        except PlaceUnreachable:
            # Nowhere to answer (a channel the bot is not in): no GPU time for images nobody could see.
            await self._jobs.cancel(job.id)
            await self.undo_admission(request, checked)
            raise
        await journal_place(self._jobs, job.id, replier)
        self._tasks.spawn(self._follower.follow(job, replier, status), f"follow-{job.id}")
        return job.id

    async def undo_admission(self, request: GenerationRequest, checked: bool) -> None:
        """Give back the rate budget and queue slot of a `checked` request, or just the slot of an approved
        review item (its budget was spent when it was first asked)."""
        if self._admission is None:
            return
        if checked:
            await self._admission.submission_failed(request.requester)
        else:
            await self._admission.job_finished(request.requester)


def _queue_refusal(exc: Exception) -> str:
    if isinstance(exc, QueueFull):
        return messages.QUEUE_FULL
    if isinstance(exc, EngineClosed):
        return messages.RESTARTING
    return messages.invalid_request(str(exc))
