"""A new prompt: validation, admission (limits, moderation, review), submitting to the job queue, and giving back
what admission counted when the job does not happen after all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bots import messages
from bots.contract import Replier, ReplyContext
from bots.conversation.follow import Follower
from bots.conversation.image_prompts import CheckedInput, ImageSource, InputImages
from bots.conversation.platforms import journal_place
from bots.conversation.render import cancel_buttons
from bots.conversation.servers import ServerSettingsStore
from bots.conversation.tasks import OwnedTasks
from bots.downloads import DownloadRefused
from bots.errors import PlaceUnreachable
from config.settings import Settings
from engine.api import JobQueue
from engine.errors import EngineClosed, InvalidRequest, QueueFull
from engine.requests import GenerationRequest, ImagePrompt, Requester
from engine.validation import prepare_record
from moderation.admission import Admission
from moderation.verdict import Action, Verdict


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
    image: ImageSource | None = None
    """An image prompt's picture, not fetched yet (bots/conversation/image_prompts.py)."""
    strength: float | None = None
    """With `image`: how much of it to redraw; None: `image_prompts.default_strength`."""

    def to_request(self, default_strength: float) -> GenerationRequest:
        """The request as validated before anything is fetched; an image prompt's path is filled in once its
        picture is checked and stored."""
        context = ReplyContext(place=dict(self.place), intake_key=self.intake_key)
        strength = default_strength if self.strength is None else self.strength
        return GenerationRequest(
            prompt=self.prompt,
            requester=self.requester,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            aspect=self.aspect,
            image_prompt=None if self.image is None else ImagePrompt(path="", strength=strength),
            delivery=context.to_dict(),
        )


ReviewHook = Callable[[str, GenerationRequest, Sequence[str], Sequence[str]], Awaitable[None]]
"""Posts a held prompt to the moderators: (review item id, request, reasons, image paths to show them)."""


class Submitter:
    def __init__(
        self,
        settings: Settings,
        jobs: JobQueue,
        admission: Admission | None,
        follower: Follower,
        tasks: OwnedTasks,
        post_for_review: ReviewHook,
        input_images: InputImages,
        servers: ServerSettingsStore,
    ) -> None:
        self._settings = settings
        self._input_images = input_images
        self._servers = servers
        self._jobs = jobs
        self._admission = admission
        self._follower = follower
        self._tasks = tasks
        self._post_for_review = post_for_review
        self.followed_before_start: set[str] | None = set()
        """Jobs submitted (and already followed) while adapters ran before start(): start() skips them."""

    async def admit_and_submit(
        self,
        request: GenerationRequest,
        replier: Replier,
        is_moderator: bool = False,
        image: ImageSource | None = None,
    ) -> str | None:
        """Validate, check an image prompt's picture, admit and queue; the job id, or None when it was refused or
        held for review. Everything here happens before any GPU time is spent."""
        try:
            record = prepare_record(request, self._settings.engine)
        except InvalidRequest as exc:
            await replier.refuse(messages.invalid_request(str(exc)))
            return None
        checked = None
        if image is not None and request.image_prompt is not None:
            checked = await self._check_image(image, (record.width, record.height), replier)
            if checked is None:
                return None
            request = replace(request, image_prompt=replace(request.image_prompt, path=checked.path))
        if self._admission is not None:
            requester = request.requester
            server = await self._servers.get(requester.platform, requester.server_id)
            rules = server.rules(self._settings.limits)
            decision = await self._admission.check(request, is_moderator=is_moderator, rules=rules)
            if decision.review_item_id:
                await replier.show_status(decision.message or messages.WAITING_FOR_REVIEW)
                reasons = decision.verdict.reasons if decision.verdict else ()
                if checked is not None and checked.flagged:
                    reasons = (*reasons, "input image flagged by the image filter", *checked.screening.reasons)
                await self._post_for_review(decision.review_item_id, request, reasons, _shown(checked))
                return None
            if not decision.admitted:
                await replier.refuse(decision.message)
                return None
        if checked is not None and checked.flagged:
            await self._hold_flagged_image(request, checked, replier)
            return None
        return await self.submit(request, replier)

    async def _check_image(self, image: ImageSource, size: tuple[int, int], replier: Replier) -> CheckedInput | None:
        """The checked, stored picture; None (the user told why) when it cannot be used."""
        try:
            return await self._input_images.check(image, size)
        except InvalidRequest as exc:  # not a picture we take (format, bytes, pixels, unreadable)
            await replier.refuse(messages.invalid_request(str(exc)))
        except DownloadRefused as exc:  # not from the platform's own files, or the download failed
            await replier.refuse(str(exc))
        return None

    async def _hold_flagged_image(self, request: GenerationRequest, checked: CheckedInput, replier: Replier) -> None:
        """The input image screening flagged: nothing is generated from it unless a moderator approves it. Without a
        review queue (no admission), it is refused."""
        if self._admission is None:
            await replier.refuse(messages.IMAGE_REFUSED_BY_FILTER)
            return
        await self._admission.job_finished(request.requester)  # admitted, but no job for now: free the queue slot
        reasons = ("input image flagged by the image filter", *checked.screening.reasons)
        verdict = Verdict(Action.REVIEW, ("image_screening",), reasons, "unsure")
        item = await self._admission.review.submit(request, verdict)
        await replier.show_status(messages.IMAGE_HELD_FOR_REVIEW)
        await self._post_for_review(item.id, request, reasons, _shown(checked))

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


def _shown(checked: CheckedInput | None) -> tuple[str, ...]:
    """What moderators see of an image prompt's picture: the withheld copy when the image filter flagged it."""
    if checked is None:
        return ()
    return (checked.withheld_path or checked.path,)


def _queue_refusal(exc: Exception) -> str:
    if isinstance(exc, QueueFull):
        return messages.QUEUE_FULL
    if isinstance(exc, EngineClosed):
        return messages.RESTARTING
    return messages.invalid_request(str(exc))
