"""The platform-neutral conversation: from a user's `/imagine` to four images posted back, and every button after.

Adapters translate platform events into `imagine()` and `press()` calls and implement `Replier` (bots/contract.py)
for the answers. This layer owns the flow: admission (limits, moderation, review) before any GPU time, submitting
to the engine, following progress (throttled status edits), delivering exactly once, and resuming all of it after a
restart from the engine's job store through each adapter's `replier_for(delivery_context)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bots import messages
from bots.buttons import Action, BadButton, Button, Style, parse_button
from bots.contract import Attachment, Delivery, ModeratorChannel, PlaceUnreachable, Replier, ReviewPost
from config.settings import Settings
from engine.engine import Engine, prepare_record
from engine.errors import EngineClosed, EngineError, InvalidRequest, NotAllowed, QueueFull
from engine.jobs import Job
from engine.requests import GeneratedImage, GenerationRequest, JobState, ProgressEvent, Requester, Variation
from engine.store import JobRecord
from moderation.admission import Admission
from moderation.messages import review_outcome_message
from moderation.review import ReviewError, ReviewItem, ReviewState
from moderation.verdict import Action as VerdictAction
from moderation.verdict import Verdict

log = logging.getLogger(__name__)
VARIATION_STRENGTH = 0.25
FLAGGED_JOB_KEY = "flagged_job"
"""In a review item's delivery context: the job whose output images the image filter withheld."""


@dataclass(frozen=True)
class ImagineCommand:
    prompt: str
    requester: Requester
    negative_prompt: str = ""
    seed: int | None = None
    aspect: str = "1:1"
    delivery: dict[str, Any] = field(default_factory=dict)
    """JSON-able context the adapter needs to reply later, even after a restart."""


@dataclass
class _Platform:
    replier_for: Callable[[dict[str, Any]], Replier]
    moderators: ModeratorChannel | None


MAX_REDELIVERY_BACKOFF_S = 3600.0


class Conversation:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        admission: Admission | None = None,
        *,
        progress_interval_s: float = 1.5,
        delivery_retry_delays: Sequence[float] = (1.0, 3.0),
        review_poll_s: float = 2.0,
        redelivery_interval_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.admission = admission
        self.progress_interval_s = progress_interval_s
        self.delivery_retry_delays = tuple(delivery_retry_delays)
        self.review_poll_s = review_poll_s
        self.redelivery_interval_s = redelivery_interval_s
        self._platforms: dict[str, _Platform] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._decisions_lock = asyncio.Lock()
        self._pollers: list[asyncio.Task[Any]] = []
        """The redelivery sweep and the review poller: close() stops them first."""
        self._delivering: set[str] = set()
        """Jobs a task of ours is following or delivering right now: a redelivery sweep leaves them alone."""
        self._redelivery_backoff: dict[str, tuple[int, float]] = {}
        """Job id -> (failed sweeps, loop time before which sweeps leave it alone): a post that keeps failing
        (the bot removed from the channel) is tried ever less often, not every sweep, logging each time."""
        self._closed = False
        self._followed_before_start: set[str] | None = set()
        """Jobs submitted (and already followed) while adapters ran before start(): start() skips them."""

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def add_platform(self, platform: str, replier_for: Callable[[dict[str, Any]], Replier],
                     moderators: ModeratorChannel | None = None) -> None:
        self._platforms[platform] = _Platform(replier_for, moderators)

    async def start(self) -> None:
        """Follow jobs the engine resumed from its journal and deliver results that were never delivered."""
        already_followed, self._followed_before_start = self._followed_before_start or set(), None
        for platform, entry in self._platforms.items():
            for job in self.engine.active_jobs(platform):
                if job.id in already_followed:
                    continue
                if self.admission is not None:
                    await self.admission.job_started(job.request.requester)
                self._spawn(self._follow(job, entry.replier_for(job.request.delivery)), f"follow-{job.id}")
        await self.redeliver_undelivered()
        self._pollers.append(self._spawn(self._redeliver_periodically(), "redelivery-sweep"))
        if self.admission is not None:
            self._pollers.append(self._spawn(self._poll_review_decisions(), "review-poller"))

    async def redeliver_undelivered(self) -> None:
        """Post results that are finished but not delivered (the platform failed every retry, or the service
        stopped in between), unless a task of ours is already on them."""
        for platform, entry in self._platforms.items():
            for record in await self.engine.undelivered(platform):
                if record.id in self._delivering or not self._redelivery_due(record.id):
                    continue
                self._delivering.add(record.id)  # claimed before the fresh look below: no second claimant
                fresh = await self.engine.lookup(record.id)
                if fresh is None or fresh.state is not JobState.DONE:  # delivered meanwhile by its follower
                    self._delivering.discard(record.id)
                    continue
                replier = entry.replier_for(fresh.request.delivery)
                self._spawn(self._redeliver(fresh, replier), f"deliver-{record.id}")

    async def _redeliver_periodically(self) -> None:
        """"They will follow", says a result that could not be posted: this keeps that promise without a
        restart, every `redelivery_interval_s`."""
        while not self._closed:
            await asyncio.sleep(self.redelivery_interval_s)
            await _logged(self.redeliver_undelivered(), "redelivering results")

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop polling; give followers up to `drain_timeout_s` to deliver what the engine finished; cancel
        the rest (their jobs stay journaled and are picked up again on the next start)."""
        self._closed = True
        for task in self._pollers:
            task.cancel()
        followers = [task for task in self._tasks if task not in self._pollers]
        if followers and drain_timeout_s > 0:
            await asyncio.wait(followers, timeout=drain_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- a new prompt ------------------------------------------------------------------------------------

    async def imagine(self, command: ImagineCommand, replier: Replier) -> str | None:
        """Admit and queue a prompt; returns the job id, or None when it was refused or held for review."""
        request = GenerationRequest(
            prompt=command.prompt, requester=command.requester, negative_prompt=command.negative_prompt,
            seed=command.seed, aspect=command.aspect, delivery=dict(command.delivery),
        )
        return await self._admit_and_submit(request, replier)

    async def _admit_and_submit(self, request: GenerationRequest, replier: Replier,
                                is_moderator: bool = False) -> str | None:
        try:
            self._validate(request)
        except InvalidRequest as exc:
            await replier.refuse(messages.invalid_request(str(exc)))
            return None
        if self.admission is not None:
            decision = await self.admission.check(request, is_moderator=is_moderator)
            if decision.review_item_id:
                await replier.show_status(decision.message or messages.WAITING_FOR_REVIEW)
                reasons = decision.verdict.reasons if decision.verdict else ()
                await self._post_for_review(decision.review_item_id, request, reasons)
                return None
            if not decision.admitted:
                await replier.refuse(decision.message)
                return None
        return await self._submit(request, replier)

    def _validate(self, request: GenerationRequest) -> None:
        prepare_record(request, self.settings.engine)

    async def _submit(self, request: GenerationRequest, replier: Replier, *, checked: bool = True) -> str | None:
        """Queue an admitted request and follow it. If the engine refuses it, or there is nowhere to answer,
        undo what admission counted (see `_undo_admission`)."""
        try:
            job = await self.engine.submit(request)
        except (QueueFull, EngineClosed, InvalidRequest) as exc:
            await self._undo_admission(request, checked)
            await replier.refuse(_engine_refusal(exc))
            return None
        if self._followed_before_start is not None:
            self._followed_before_start.add(job.id)
        status = _ThrottledStatus(replier, job.request.prompt, self.progress_interval_s)
        try:
            await status.show_first(job.snapshot(), _cancel_button(job.id))  # where they stand, before all else
        except PlaceUnreachable:
            # Nowhere to answer (a channel the bot is not in): no GPU time for images nobody could see.
            await self.engine.cancel(job.id)
            await self._undo_admission(request, checked)
            raise
        await self._journal_place(job.id, replier)
        self._spawn(self._follow(job, replier, status), f"follow-{job.id}")
        return job.id

    async def _undo_admission(self, request: GenerationRequest, checked: bool) -> None:
        """Give back the rate budget and queue slot of a `checked` request, or just the slot of an approved
        review item (its budget was spent when it was first asked)."""
        if self.admission is None:
            return
        if checked:
            await self.admission.submission_failed(request.requester)
        else:
            await self.admission.job_finished(request.requester)

    # ---- following a job ---------------------------------------------------------------------------------

    async def _follow(self, job: Job, replier: Replier, status: _ThrottledStatus | None = None) -> None:
        self._delivering.add(job.id)
        try:
            await self._follow_until_delivered(job, replier, status)
        finally:
            self._delivering.discard(job.id)

    async def _follow_until_delivered(self, job: Job, replier: Replier, status: _ThrottledStatus | None) -> None:
        status = status or _ThrottledStatus(replier, job.request.prompt, self.progress_interval_s)
        cancel = _cancel_button(job.id)
        async for event in job.events():
            if not event.state.finished:
                await status.show(event, cancel)
                await self._journal_place(job.id, replier)
        if not job.state.finished:
            return  # handed back at shutdown: it resumes, and is followed again, after the restart
        if self.admission is not None:
            await self.admission.job_finished(job.request.requester)
        if job.state is JobState.DONE and not await self._deliver_record(await self._record(job.id), replier):
            await status.show_text(messages.status_delivery_delayed(job.request.prompt), (), final=True)
            return
        await status.show(job.snapshot(), (), final=True)

    async def _journal_place(self, job_id: str, replier: Replier) -> None:
        """Keep the job's journaled delivery context in step with the replier's (see bots/contract.py)."""
        context = getattr(replier, "context", None)
        if isinstance(context, dict):
            await self.engine.update_delivery(job_id, context)

    async def _record(self, job_id: str) -> JobRecord:
        record = await self.engine.lookup(job_id)
        if record is None:
            raise LookupError(f"job {job_id} is not in the job store")
        return record

    async def _redeliver(self, record: JobRecord, replier: Replier) -> None:
        """Deliver a result that its follower could not (or that finished before a restart), then close its
        status message (it still says the images will follow, or shows progress from before the restart).
        The caller has claimed the job in `_delivering`; this releases it."""
        try:
            if not await self._deliver_record(record, replier):
                self._redelivery_failed(record.id)
                return
            self._redelivery_backoff.pop(record.id, None)
            done = ProgressEvent(job_id=record.id, state=JobState.DONE)
            await _logged(replier.show_status(messages.status(done, record.request.prompt)), "closing a status")
        finally:
            self._delivering.discard(record.id)

    def _redelivery_due(self, job_id: str) -> bool:
        _, due = self._redelivery_backoff.get(job_id, (0, 0.0))
        return asyncio.get_running_loop().time() >= due

    def _redelivery_failed(self, job_id: str) -> None:
        """Double the wait before the next sweep tries this job again, up to MAX_REDELIVERY_BACKOFF_S."""
        failures = self._redelivery_backoff.get(job_id, (0, 0.0))[0] + 1
        wait_s = min(self.redelivery_interval_s * 2 ** (failures - 1), MAX_REDELIVERY_BACKOFF_S)
        self._redelivery_backoff[job_id] = (failures, asyncio.get_running_loop().time() + wait_s)

    async def _deliver_record(self, record: JobRecord, replier: Replier) -> bool:
        """Post the images, retrying transient failures; record delivery only after the post succeeded."""
        delivery = images_message(record)
        for attempt, delay in enumerate((*self.delivery_retry_delays, None), start=1):
            try:
                await replier.deliver(delivery)
                break
            except Exception as exc:  # a platform error must not kill the follower: retry, then leave it journaled
                if delay is None:
                    log.error("delivering job %s failed %d times (%s); it stays undelivered", record.id, attempt, exc)
                    await self._journal_place(record.id, replier)  # what did get posted, for the next try
                    return False
                log.warning("delivering job %s failed (%s); retrying in %.1f s", record.id, exc, delay)
                await asyncio.sleep(delay)
        await self.engine.mark_delivered(record.id)
        log.info("job %s delivered to %s", record.id, record.request.requester.key)
        if any(image.withheld for image in record.images):
            await self._flag_withheld_images(record)
        return True

    async def _flag_withheld_images(self, record: JobRecord) -> None:
        """Send a job whose output the image filter withheld to the moderators, with the blurred images."""
        if self.admission is None:
            return
        withheld = [image for image in record.images if image.withheld]
        reasons = tuple(dict.fromkeys(reason for image in withheld for reason in image.screening_reasons))
        verdict = Verdict(VerdictAction.REVIEW, ("image_screening",), reasons or ("image filter hit",), "unsure")
        request = replace(record.request, delivery={**record.request.delivery, FLAGGED_JOB_KEY: record.id})
        item = await self.admission.review.submit(request, verdict)
        await self._post_for_review(item.id, request, (f"{len(withheld)} output image(s) withheld", *reasons),
                                    [image.path for image in withheld])

    # ---- buttons -----------------------------------------------------------------------------------------

    async def press(self, custom_id: str, user: Requester, replier: Replier, *, is_moderator: bool = False,
                    delivery: dict[str, Any] | None = None) -> None:
        """Act on a button: U/V/reroll/cancel on a job, approve/reject on a review item."""
        try:
            button = parse_button(custom_id)
        except BadButton:
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return
        if button.action in (Action.APPROVE, Action.REJECT):
            await self._decide(button, user, replier, is_moderator)
        elif button.action is Action.CANCEL:
            await self._cancel(button.target, user, replier)
        else:
            await self._job_button(button, user, replier, delivery)

    async def _cancel(self, job_id: str, user: Requester, replier: Replier) -> None:
        try:
            cancelled = await self.engine.cancel(job_id, by=user)
        except NotAllowed:
            await replier.refuse(messages.NOT_YOURS_TO_CANCEL)
            return
        if not cancelled:
            await replier.refuse(messages.ALREADY_FINISHED)

    async def _job_button(self, button: Button, user: Requester, replier: Replier,
                          delivery: dict[str, Any] | None) -> None:
        record = await self.engine.lookup(button.target)
        if record is None or not record.images and button.action is not Action.REROLL:
            await replier.refuse(messages.UNKNOWN_JOB)
            return
        index = button.index or 0
        if button.action in (Action.UPSCALE, Action.VARIATION) and not 0 <= index < len(record.images):
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return
        if button.action is Action.UPSCALE:
            await replier.deliver(single_image_message(record, index))
            return
        original = record.request
        variation = None
        if button.action is Action.VARIATION:
            variation = Variation(record.images[index].seed, VARIATION_STRENGTH)
        request = GenerationRequest(
            prompt=original.prompt, requester=user, negative_prompt=original.negative_prompt,
            aspect=original.aspect, size=original.size, steps=original.steps, variation=variation,
            delivery=dict(original.delivery if delivery is None else delivery),
        )
        await self._admit_and_submit(request, replier)

    # ---- moderators --------------------------------------------------------------------------------------

    async def _post_for_review(self, item_id: str, request: GenerationRequest, reasons: Sequence[str],
                               image_paths: Sequence[str] = ()) -> None:
        entry = self._platforms.get(request.requester.platform)
        if entry is None or entry.moderators is None:
            log.warning("review item %s has no moderator channel on %s", item_id, request.requester.platform)
            return
        who = request.requester
        place = f" in {who.server_id or 'a DM'}" + (f" / {who.channel_id}" if who.channel_id else "")
        post = ReviewPost(
            item_id=item_id,
            text=messages.review_post(who.platform, who.user_id, place, request.prompt, list(reasons)),
            buttons=(Button(Action.APPROVE, item_id, label="Approve", style=Style.SUCCESS),
                     Button(Action.REJECT, item_id, label="Reject", style=Style.DANGER)),
            image_paths=tuple(image_paths),
        )
        await _logged(entry.moderators.post_review(post), f"posting review item {item_id}")

    async def _decide(self, button: Button, user: Requester, replier: Replier, is_moderator: bool) -> None:
        if self.admission is None:
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return
        action = "approve" if button.action is Action.APPROVE else "reject"
        if not is_moderator:
            await self.admission.audit.record_refused(user.key, action, f"review:{button.target}", "not a moderator")
            await replier.refuse(messages.NOT_A_MODERATOR)
            return
        review = self.admission.review
        try:
            if button.action is Action.APPROVE:
                await review.approve(button.target, user.key)
            else:
                await review.reject(button.target, user.key)
        except ReviewError as exc:  # already decided, expired, unknown: the message says which
            await replier.refuse(str(exc))
            return
        await self.process_review_decisions()

    async def process_review_decisions(self) -> None:
        """Act on decided review items exactly once, wherever they were decided (chat, dashboard or CLI)."""
        if self.admission is None:
            return
        async with self._decisions_lock:
            await self.admission.review.expire_due()
            for item in await self.admission.review.claim_decided(platforms=list(self._platforms)):
                await self._act_on_decision(item)

    async def _act_on_decision(self, item: ReviewItem) -> None:
        request = item.request
        entry = self._platforms.get(request.requester.platform)
        if entry is None:
            log.warning("review item %s belongs to %s, which is not connected", item.id, request.requester.platform)
            return
        replier = entry.replier_for(request.delivery)
        approved = item.state is ReviewState.APPROVED
        if entry.moderators is not None and item.decided_by:
            text = messages.review_decided(approved, item.decided_by, item.decision_reason or "")
            await _logged(entry.moderators.close_review(item.id, text), "updating a review message")
        flagged_job = request.delivery.get(FLAGGED_JOB_KEY)
        if flagged_job:
            if approved:  # the moderator judged the filter wrong: release the original images
                await self._release_withheld(str(flagged_job), replier)
            return
        await _logged(replier.notify(review_outcome_message(item)), "telling a requester about a decision")
        if approved and self.admission is not None:
            await self.admission.job_started(request.requester)
            await self._submit(request, replier, checked=False)

    async def _release_withheld(self, job_id: str, replier: Replier) -> None:
        record = await self.engine.lookup(job_id)
        if record is None:
            return
        originals = [replace(image, path=image.original_path, withheld=False)
                     for image in record.images if image.withheld and image.original_path]
        if originals:
            await _logged(replier.deliver(images_message(replace(record, images=tuple(originals)))),
                          f"releasing withheld images of job {job_id}")

    async def _poll_review_decisions(self) -> None:
        while not self._closed:
            await _logged(self.process_review_decisions(), "processing review decisions")
            await asyncio.sleep(self.review_poll_s)

    # ---- helpers -----------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coroutine` as a task this conversation owns: close() cancels it, failures are logged."""
        task = asyncio.create_task(_logged(coroutine, name), name=name)
        self._tasks.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            coroutine.close()  # a task cancelled before it ever ran would leave `coroutine` never awaited

        task.add_done_callback(forget)
        return task


async def _logged(awaitable: Awaitable[Any], what: str) -> Any:
    """Run a background step; log a failure instead of letting it vanish or crash a shared task."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except EngineError as exc:
        log.warning("%s: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)
    return None


class _ThrottledStatus:
    """Edits the status message at most once per interval, and only when the text changes."""

    def __init__(self, replier: Replier, prompt: str, interval_s: float) -> None:
        self.replier = replier
        self.prompt = prompt
        self.interval_s = interval_s
        self.shown: str | None = None
        self.shown_at = -math.inf

    async def show(self, event: ProgressEvent, buttons: Sequence[Button], final: bool = False) -> None:
        await self.show_text(messages.status(event, self.prompt), buttons, final)

    async def show_first(self, event: ProgressEvent, buttons: Sequence[Button]) -> None:
        """The first status: like `show`, except that `PlaceUnreachable` reaches the caller (any other failure
        is transient: the follower's next update tries again)."""
        text = messages.status(event, self.prompt)
        try:
            await self.replier.show_status(text, buttons)
        except PlaceUnreachable:
            raise
        except Exception:
            log.exception("posting the first status message failed")
            return
        self.shown, self.shown_at = text, time.monotonic()

    async def show_text(self, text: str, buttons: Sequence[Button], final: bool = False) -> None:
        if text == self.shown:
            return
        wait = self.shown_at + self.interval_s - time.monotonic()
        if wait > 0:
            if not final:
                return
            await asyncio.sleep(wait)
        await _logged(self.replier.show_status(text, buttons), "updating a status message")
        self.shown, self.shown_at = text, time.monotonic()


def _engine_refusal(exc: Exception) -> str:
    if isinstance(exc, QueueFull):
        return messages.QUEUE_FULL
    if isinstance(exc, EngineClosed):
        return messages.RESTARTING
    return messages.invalid_request(str(exc))


def _cancel_button(job_id: str) -> tuple[Button, ...]:
    return (Button(Action.CANCEL, job_id, label="Cancel", style=Style.DANGER),)


def image_buttons(job_id: str, count: int) -> tuple[tuple[Button, ...], ...]:
    upscale = tuple(Button(Action.UPSCALE, job_id, i, label=f"U{i + 1}") for i in range(count))
    variations = tuple(Button(Action.VARIATION, job_id, i, label=f"V{i + 1}") for i in range(count))
    reroll = (Button(Action.REROLL, job_id, label="🔄", style=Style.PRIMARY),)
    return upscale, variations, reroll


def images_message(record: JobRecord) -> Delivery:
    attachments = tuple(_attachment(record, image) for image in record.images)
    withheld = sum(1 for image in record.images if image.withheld)
    return Delivery(
        job_id=record.id,
        text=messages.delivery_text(record.request.prompt, [image.seed for image in record.images], withheld),
        attachments=attachments,
        button_rows=image_buttons(record.id, len(record.images)),
    )


def single_image_message(record: JobRecord, index: int) -> Delivery:
    image = record.images[index]
    return Delivery(
        job_id=record.id,
        text=messages.upscale_text(record.request.prompt, index, image.seed),
        attachments=(_attachment(record, image),),
        button_rows=((Button(Action.VARIATION, record.id, index, label=f"V{index + 1}"),),),
    )


def _attachment(record: JobRecord, image: GeneratedImage) -> Attachment:
    return Attachment(filename=f"imagine-{record.id[:8]}-{image.index + 1}.jpg", path=image.path,
                      width=image.width, height=image.height)
