"""Posting a finished job's images exactly once: retries, then a sweep that delivers what is still undelivered.

Who is delivering which job is claimed here before a post, so a sweep and a follower never both post one result;
a post that keeps failing (the bot removed from the channel) is tried at doubling intervals, up to an hour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from bots import messages
from bots.contract import Replier
from bots.conversation.platforms import Platforms, journal_place, reply_context
from bots.conversation.render import images_message
from bots.conversation.tasks import OwnedTasks, logged
from engine.api import JobQueue, JobRecord
from engine.requests import JobState, ProgressEvent

log = logging.getLogger(__name__)
MAX_REDELIVERY_BACKOFF_S = 3600.0

WithheldHook = Callable[[JobRecord], Awaitable[None]]
"""Called after delivering a job some of whose images the image filter withheld (the review desk takes it)."""


class DeliveryClaims:
    """Which jobs this process is delivering, and when a failing one may be tried again."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._held: set[str] = set()
        self._backoff: dict[str, tuple[int, float]] = {}
        """Job id -> (failed sweeps, loop time before which sweeps leave it alone)."""

    def claim(self, job_id: str) -> bool:
        """Take the job unless a task of ours holds it or its retry time has not come."""
        _, due = self._backoff.get(job_id, (0, 0.0))
        if job_id in self._held or asyncio.get_running_loop().time() < due:
            return False
        self._held.add(job_id)
        return True

    def hold(self, job_id: str) -> None:
        """A follower holds its own job from submission on: no sweep delivers it meanwhile."""
        self._held.add(job_id)

    def release(self, job_id: str) -> None:
        self._held.discard(job_id)

    def delivered(self, job_id: str) -> None:
        self._backoff.pop(job_id, None)

    def failed(self, job_id: str) -> None:
        """Double the wait before the next sweep tries this job again, up to MAX_REDELIVERY_BACKOFF_S."""
        failures = self._backoff.get(job_id, (0, 0.0))[0] + 1
        wait_s = min(self._interval_s * 2 ** (failures - 1), MAX_REDELIVERY_BACKOFF_S)
        self._backoff[job_id] = (failures, asyncio.get_running_loop().time() + wait_s)


class Deliveries:
    def __init__(
        self,
        jobs: JobQueue,
        platforms: Platforms,
        tasks: OwnedTasks,
        on_withheld: WithheldHook,
        *,
        retry_delays: Sequence[float],
        redelivery_interval_s: float,
    ) -> None:
        self._jobs = jobs
        self._platforms = platforms
        self._tasks = tasks
        self._on_withheld = on_withheld
        self._retry_delays = tuple(retry_delays)
        self.redelivery_interval_s = redelivery_interval_s
        self.claims = DeliveryClaims(redelivery_interval_s)

    async def deliver(self, record: JobRecord, replier: Replier) -> bool:
        """Post the images, retrying transient failures; record delivery only after the post succeeded."""
        delivery = images_message(record)
        for attempt, delay in enumerate((*self._retry_delays, None), start=1):
            try:
                await replier.deliver(delivery)
                break
            except Exception as exc:  # a platform error must not kill the follower: retry, then leave it journaled
                if delay is None:
                    log.error("delivering job %s failed %d times (%s); it stays undelivered", record.id, attempt, exc)
                    await journal_place(self._jobs, record.id, replier)  # what did get posted, for the next try
                    return False
                log.warning("delivering job %s failed (%s); retrying in %.1f s", record.id, exc, delay)
                await asyncio.sleep(delay)
        await self._jobs.mark_delivered(record.id)
        log.info("job %s delivered to %s", record.id, record.request.requester.key)
        if any(image.withheld for image in record.images):
            await self._on_withheld(record)
        return True

    async def redeliver_undelivered(self) -> None:
        """Post results that are finished but not delivered (the platform failed every retry, or the service
        stopped in between), unless a task of ours is already on them."""
        for platform, entry in self._platforms.items():
            for record in await self._jobs.undelivered(platform):
                if not self.claims.claim(record.id):
                    continue
                fresh = await self._jobs.lookup(record.id)  # after the claim: no second claimant can slip in
                if fresh is None or fresh.state is not JobState.DONE:  # delivered meanwhile by its follower
                    self.claims.release(record.id)
                    continue
                replier = entry.replier(reply_context(fresh.request))
                self._tasks.spawn(self._redeliver(fresh, replier), f"deliver-{record.id}")

    async def sweep_periodically(self) -> None:
        """ "They will follow", says a result that could not be posted: this keeps that promise without a
        restart, every `redelivery_interval_s`."""
        while True:
            await asyncio.sleep(self.redelivery_interval_s)
            await logged(self.redeliver_undelivered(), "redelivering results")

    async def _redeliver(self, record: JobRecord, replier: Replier) -> None:
        """Deliver a result that its follower could not (or that finished before a restart), then close its
        status message (it still says the images will follow, or shows progress from before the restart).
        The caller has claimed the job; this releases it."""
        try:
            if not await self.deliver(record, replier):
                self.claims.failed(record.id)
                return
            self.claims.delivered(record.id)
            done = ProgressEvent(job_id=record.id, state=JobState.DONE)
            await logged(replier.show_status(messages.status(done, record.request.prompt)), "closing a status")
        finally:
            self.claims.release(record.id)
