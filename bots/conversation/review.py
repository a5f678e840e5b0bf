"""The review desk in chat: held prompts and withheld images posted to moderators, their decisions acted on
exactly once wherever they were made (chat buttons, the dashboard or `imagine review`).

A review post that fails (after the adapter's own retries) is tried again by the poller, backing off to once every
`MAX_REPOST_INTERVAL_S`, for as long as its item waits for a decision: moderators get every held prompt in chat,
not only in the dashboard. What a post shows is stored with its item before it is posted, and the item marked once
it is. The stored post is leased to the process making it (`POST_LEASE_S`, renewed while it tries): when that
process dies, or stops and hands its posts back, another one sharing the store (or the next start) takes the post
over and makes it, and only one of them does."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bots import messages
from bots.buttons import Action, Button
from bots.contract import Replier, ReplyContext, ReviewPost
from bots.conversation.platforms import Platforms, reply_context
from bots.conversation.render import images_message, review_buttons
from bots.conversation.servers import ServerSettingsStore
from bots.conversation.submit import Submitter
from bots.conversation.tasks import logged
from engine.api import JobQueue, JobRecord
from engine.requests import GenerationRequest, Requester
from moderation.admission import Admission
from moderation.errors import ReviewError, ReviewItemNotFound
from moderation.messages import review_outcome_message
from moderation.review import ReviewItem, ReviewState
from moderation.verdict import Action as VerdictAction
from moderation.verdict import Verdict
from storage.deliveries import process_owner

log = logging.getLogger(__name__)
MAX_REPOST_INTERVAL_S = 600.0
POST_LEASE_S = 60.0
"""How long a process that stops renewing a review post's lease (it died) keeps others from taking it over."""


@dataclass(frozen=True)
class UnpostedReview:
    """A review post that did not reach the moderators' channel yet."""

    platform: str
    post: ReviewPost
    failures: int
    next_try_at: float
    """time.monotonic() seconds."""


class ReviewDesk:
    def __init__(
        self,
        jobs: JobQueue,
        admission: Admission | None,
        platforms: Platforms,
        poll_s: float,
        servers: ServerSettingsStore,
        post_lease_s: float = POST_LEASE_S,
    ) -> None:
        self._jobs = jobs
        self._servers = servers
        self._admission = admission
        self._platforms = platforms
        self.poll_s = poll_s
        self._decisions_lock = asyncio.Lock()
        self._submitter: Submitter | None = None
        self._unposted: dict[str, UnpostedReview] = {}
        self.post_lease_s = post_lease_s
        self._owner = process_owner()
        """How the leases of this desk's review posts name it: host, pid and a token, as delivery claims do."""
        self._leased: set[str] = set()
        """Items whose post this desk staged or took over and has not made yet: it renews their leases."""
        self._renewed_at = time.monotonic()
        self.polls = 0
        """Rounds of `poll_decisions` completed (what tests watch)."""

    def attach(self, submitter: Submitter) -> None:
        """An approved prompt is submitted like any other (the submitter posts held prompts here: a cycle that
        the conversation closes once both exist)."""
        self._submitter = submitter

    async def post_for_review(
        self, item_id: str, request: GenerationRequest, reasons: Sequence[str], image_paths: Sequence[str] = ()
    ) -> None:
        entry = self._platforms.get(request.requester.platform)
        if entry is None or entry.moderators is None:
            log.warning("review item %s has no moderator channel on %s", item_id, request.requester.platform)
            return
        who = request.requester
        place = f" in {who.server_id or 'a DM'}" + (f" / {who.channel_id}" if who.channel_id else "")
        server = await self._servers.get(who.platform, who.server_id)
        post = ReviewPost(
            item_id=item_id,
            text=messages.review_post(who.platform, who.user_id, place, request.prompt, list(reasons)),
            buttons=review_buttons(item_id),
            image_paths=tuple(image_paths),
            channel=server.moderator_channel,
        )
        if self._admission is not None:  # stored first: a restart posts it if this process cannot
            await self._admission.review.stage_post(
                item_id, _post_to_json(who.platform, post), self._owner, self.post_lease_s
            )
            self._leased.add(item_id)
        await self._post(who.platform, post)

    async def _post(self, platform: str, post: ReviewPost) -> None:
        """Post for review; on failure keep it for `repost_unposted`, at doubling intervals."""
        entry = self._platforms.get(platform)
        if entry is None or entry.moderators is None:  # its lease runs out: a process on that platform takes it
            self._unposted.pop(post.item_id, None)
            self._leased.discard(post.item_id)
            return
        try:
            await entry.moderators.post_review(post)
        except Exception as error:  # the platform failed past its own retries: never lose the post
            earlier = self._unposted.get(post.item_id)
            failures = 1 + (earlier.failures if earlier else 0)
            wait = min(self.poll_s * 2**failures, MAX_REPOST_INTERVAL_S)
            self._unposted[post.item_id] = UnpostedReview(platform, post, failures, time.monotonic() + wait)
            log.error(
                "posting review item %s to the %s moderators failed (%r); trying again in %.0f s",
                post.item_id,
                platform,
                error,
                wait,
            )
            return
        self._unposted.pop(post.item_id, None)
        self._leased.discard(post.item_id)
        if self._admission is not None:
            await self._admission.review.mark_posted(post.item_id)

    async def take_over_unposted(self) -> None:
        """Take over the stored posts no live process is making (a previous run's, or a process's that died), on
        the platforms connected here: posted by the next `repost_unposted`."""
        if self._admission is None:
            return
        review = self._admission.review
        for item_id, post_json in await review.claim_unposted(self._owner, self.post_lease_s, self._platforms.names()):
            try:
                platform, post = _post_from_json(item_id, post_json)
            except (ValueError, KeyError, TypeError) as error:  # written by this code: only a damaged row
                log.warning("review item %s has an unreadable stored post (%r); not posted", item_id, error)
                continue
            log.info("review item %s never reached the %s moderators: posting it here", item_id, platform)
            self._leased.add(item_id)
            self._unposted[item_id] = UnpostedReview(platform, post, failures=0, next_try_at=0.0)

    async def release_posts(self) -> None:
        """Hand back the leases on the posts this desk has not made (it is stopping): the next start, or another
        process sharing the store, makes them at once instead of after the lease."""
        if self._admission is not None and self._leased:
            released = await self._admission.review.release_posts(self._owner)
            log.info("handed back %d review post(s) not made yet", released)
            self._leased.clear()

    async def repost_unposted(self) -> None:
        """Try again the review posts that failed and are due, while their items still wait for a decision."""
        await self._renew_leases()
        for item_id, unposted in list(self._unposted.items()):
            if time.monotonic() < unposted.next_try_at:
                continue
            if not await self._still_pending(item_id):
                self._unposted.pop(item_id, None)
                continue
            await self._post(unposted.platform, unposted.post)
            if item_id not in self._unposted:
                log.info(
                    "review item %s reached the %s moderators after %d failures",
                    item_id,
                    unposted.platform,
                    unposted.failures,
                )

    async def _renew_leases(self) -> None:
        """Renew the leases on this desk's unmade posts a third of the way through them; forget the posts that
        were made or taken over meanwhile (this process was stalled past its lease)."""
        if self._admission is None or not self._leased:
            return
        if time.monotonic() - self._renewed_at < self.post_lease_s / 3:
            return
        self._renewed_at = time.monotonic()
        held = await self._admission.review.renew_posts(self._owner, sorted(self._leased), self.post_lease_s)
        for item_id in self._leased - held:
            self._leased.discard(item_id)
            if self._unposted.pop(item_id, None) is not None:
                log.info("review item %s: its post was made or taken over elsewhere; not posting it here", item_id)

    async def _still_pending(self, item_id: str) -> bool:
        if self._admission is None:
            return False
        try:
            item = await self._admission.review.get(item_id)
        except ReviewItemNotFound:
            return False
        return item.state is ReviewState.PENDING

    async def flag_withheld_images(self, record: JobRecord) -> None:
        """Send a job whose output the image filter withheld to the moderators, with the blurred images."""
        if self._admission is None:
            return
        withheld = [image for image in record.images if image.withheld]
        reasons = tuple(dict.fromkeys(reason for image in withheld for reason in image.screening_reasons))
        verdict = Verdict(VerdictAction.REVIEW, ("image_screening",), reasons or ("image filter hit",), "unsure")
        context = replace(reply_context(record.request), flagged_job=record.id)
        request = replace(record.request, delivery=context.to_dict())
        item = await self._admission.review.submit(request, verdict)
        await self.post_for_review(
            item.id,
            request,
            (f"{len(withheld)} output image(s) withheld", *reasons),
            [image.path for image in withheld],
        )

    async def decide(self, button: Button, user: Requester, replier: Replier, is_moderator: bool) -> None:
        if self._admission is None:
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return
        action = "approve" if button.action is Action.APPROVE else "reject"
        if not is_moderator:
            await self._admission.audit.record_refused(user.key, action, f"review:{button.target}", "not a moderator")
            await replier.refuse(messages.NOT_A_MODERATOR)
            return
        review = self._admission.review
        try:
            if button.action is Action.APPROVE:
                await review.approve(button.target, user.key)
            else:
                await review.reject(button.target, user.key)
        except ReviewError as exc:  # already decided, expired, unknown: the message says which
            await replier.refuse(str(exc))
            return
        await self.process_decisions()

    async def process_decisions(self) -> None:
        """Act on decided review items exactly once, wherever they were decided (chat, dashboard or CLI)."""
        if self._admission is None:
            return
        async with self._decisions_lock:
            await self._admission.review.expire_due()
            for item in await self._admission.review.claim_decided(platforms=self._platforms.names()):
                await self._act_on_decision(item)

    async def poll_decisions(self) -> None:
        while True:
            await logged(self.process_decisions(), "processing review decisions")
            await logged(self.take_over_unposted(), "taking over review posts no process made")
            await logged(self.repost_unposted(), "posting review items again")
            self.polls += 1
            await asyncio.sleep(self.poll_s)

    async def _act_on_decision(self, item: ReviewItem) -> None:
        request = item.request
        entry = self._platforms.get(request.requester.platform)
        if entry is None:
            log.warning("review item %s belongs to %s, which is not connected", item.id, request.requester.platform)
            return
        context = reply_context(request)
        replier = entry.replier(context)
        approved = item.state is ReviewState.APPROVED
        if entry.moderators is not None and item.decided_by:
            text = messages.review_decided(approved, item.decided_by, item.decision_reason or "")
            server = await self._servers.get(request.requester.platform, request.requester.server_id)
            closing = entry.moderators.close_review(item.id, text, channel=server.moderator_channel)
            await logged(closing, "updating a review message")
        if context.flagged_job:
            if approved:  # the moderator judged the filter wrong: release the original images
                await self._release_withheld(context.flagged_job, replier)
            return
        await logged(replier.notify(review_outcome_message(item)), "telling a requester about a decision")
        if approved and self._admission is not None and self._submitter is not None:
            await self._admission.job_started(request.requester)
            await self._submitter.submit(_without_review_fields(request), replier, checked=False)

    async def _release_withheld(self, job_id: str, replier: Replier) -> None:
        record = await self._jobs.lookup(job_id)
        if record is None:
            return
        originals = [
            replace(image, path=image.original_path, withheld=False)
            for image in record.images
            if image.withheld and image.original_path
        ]
        if originals:
            await logged(
                replier.deliver(images_message(replace(record, images=tuple(originals)))),
                f"releasing withheld images of job {job_id}",
            )


def _without_review_fields(request: GenerationRequest) -> GenerationRequest:
    context = reply_context(request)
    return replace(request, delivery=ReplyContext(context.place, context.intake_key).to_dict())


def _post_to_json(platform: str, post: ReviewPost) -> str:
    """What `_post_from_json` needs to make the same post again (the buttons follow from the item's id)."""
    return json.dumps(
        {
            "platform": platform,
            "text": post.text,
            "image_paths": list(post.image_paths),
            "meta": post.meta,
            "channel": post.channel,
        }
    )


def _post_from_json(item_id: str, post_json: str) -> tuple[str, ReviewPost]:
    data = json.loads(post_json)
    post = ReviewPost(
        item_id=item_id,
        text=str(data["text"]),
        buttons=review_buttons(item_id),
        image_paths=tuple(str(path) for path in data["image_paths"]),
        meta=dict(data["meta"]),
        channel=str(data["channel"]),
    )
    return str(data["platform"]), post
