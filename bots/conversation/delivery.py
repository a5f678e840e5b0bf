"""Posting a finished job's images exactly once: retries, then a sweep that delivers what is still undelivered.

Who is delivering which job is claimed in the database (`storage/deliveries.py`) before a post, so a sweep and a
follower, in this process or another, never both post one result. A claim is a lease kept alive while the post
runs, so a process that dies mid-post holds it for a minute at most (and not at all once a restart on the same
host sees the process gone). A post that keeps failing (the bot removed from the channel) is swept at doubling
intervals, up to an hour, and given up after `service.delivery_give_up_s`, its requester told another way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

from bots import messages, metrics
from bots.contract import Replier
from bots.conversation.platforms import Platform, Platforms, journal_place, reply_context
from bots.conversation.render import images_message
from bots.conversation.tasks import OwnedTasks, logged
from engine.api import JobQueue, JobRecord
from engine.requests import JobState, ProgressEvent
from storage.database import Database
from storage.deliveries import Deliveries as DeliveryLedger
from storage.deliveries import owner_is_gone, process_owner

log = logging.getLogger(__name__)
MAX_REDELIVERY_BACKOFF_S = 3600.0
CLAIM_LEASE_S = 60.0
"""How long a claim outlives a process that died holding it (on another host; on this one a restart takes it)."""

WithheldHook = Callable[[JobRecord], Awaitable[None]]
"""Called after delivering a job some of whose images the image filter withheld (the review desk takes it)."""


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every try failed: the job stays undelivered for a later sweep."""
    TAKEN = "taken"
    """Someone else (another process's sweep) holds the job: they post it."""


class Deliveries:
    def __init__(
        self,
        jobs: JobQueue,
        database: Database,
        platforms: Platforms,
        tasks: OwnedTasks,
        on_withheld: WithheldHook,
        *,
        retry_delays: Sequence[float],
        redelivery_interval_s: float,
        give_up_after_s: float,
    ) -> None:
        self._jobs = jobs
        self._platforms = platforms
        self._tasks = tasks
        self._on_withheld = on_withheld
        self._retry_delays = tuple(retry_delays)
        self.redelivery_interval_s = redelivery_interval_s
        self._give_up_after_s = give_up_after_s
        self._ledger = DeliveryLedger(
            database, first_retry_s=redelivery_interval_s, max_retry_s=MAX_REDELIVERY_BACKOFF_S
        )
        self.owner = process_owner()
        self._followed: set[str] = set()
        """Jobs a follower of ours watches from submission on: our sweep leaves them to it."""

    def hold(self, job_id: str) -> None:
        self._followed.add(job_id)

    def release(self, job_id: str) -> None:
        self._followed.discard(job_id)

    async def deliver(self, record: JobRecord, replier: Replier) -> Outcome:
        """A follower's delivery: claim the job, post it with retries. A failure is not counted against the job
        (the next sweep may try at once); it is the sweeps that back off."""
        async with self._claim(record.id) as claimed:
            if not claimed:
                log.info("job %s is being delivered by another process", record.id)
                return Outcome.TAKEN
            outcome, error = await self._post(record, replier)
            if outcome is Outcome.FAILED:  # no retry time: the next sweep may try at once
                await self._ledger.release_after_failure(record.id, self.owner, error)
            return outcome

    async def redeliver_undelivered(self) -> None:
        """Post results that are finished but not delivered (the platform failed every retry, or the service
        stopped in between) and due, unless a follower of ours or another process is on them."""
        released = await self._ledger.release_abandoned(partial(owner_is_gone, me=self.owner))
        if released:
            log.info("took back the delivery claims of a process that is gone: %s", ", ".join(released))
        for platform, entry in self._platforms.items():
            for job_id in await self._ledger.due(platform):
                if job_id not in self._followed:
                    self._tasks.spawn(self._redeliver(job_id, entry), f"deliver-{job_id}")

    async def sweep_periodically(self) -> None:
        """ "They will follow", says a result that could not be posted: this keeps that promise without a
        restart, every `redelivery_interval_s`."""
        while True:
            await asyncio.sleep(self.redelivery_interval_s)
            await logged(self.redeliver_undelivered(), "redelivering results")

    async def _redeliver(self, job_id: str, platform: Platform) -> None:
        """Deliver a result that its follower could not (or that finished before a restart), then close its
        status message (it still says the images will follow, or shows progress from before the restart)."""
        async with self._claim(job_id) as claimed:
            record = await self._jobs.lookup(job_id) if claimed else None  # after the claim: nobody slips in
            if record is None or record.state is not JobState.DONE:  # taken, or delivered meanwhile
                return
            replier = platform.replier(reply_context(record.request))
            outcome, error = await self._post(record, replier)
            if outcome is Outcome.FAILED:
                await self._after_failed_sweep(record, replier, error)
                return
            metrics.REDELIVERIES.labels(record.request.requester.platform).inc()
            done = ProgressEvent(job_id=record.id, state=JobState.DONE)
            await logged(replier.show_status(messages.status(done, record.request.prompt)), "closing a status")

    async def _after_failed_sweep(self, record: JobRecord, replier: Replier, error: str) -> None:
        """Back off; or, once posts have failed for `give_up_after_s` (the bot removed, the channel deleted),
        give up for good and tell the requester another way (an ephemeral note or a DM)."""
        delivery = await self._ledger.get(record.id)
        first_failed_at = delivery.first_failed_at if delivery and delivery.first_failed_at else time.time()
        if time.time() - first_failed_at < self._give_up_after_s:
            await self._ledger.record_failure(record.id, self.owner, error)
            return
        await self._ledger.give_up(record.id, self.owner, error)
        platform = record.request.requester.platform
        metrics.DELIVERIES_GIVEN_UP.labels(platform).inc()
        log.warning("gave up delivering job %s to %s: %s", record.id, record.request.requester.key, error)
        await logged(replier.notify(messages.delivery_given_up(record.request.prompt)), "telling a requester")

    async def _post(self, record: JobRecord, replier: Replier) -> tuple[Outcome, str]:
        """Post the images, retrying transient failures; record delivery only after the post succeeded."""
        delivery = images_message(record)
        for attempt, delay in enumerate((*self._retry_delays, None), start=1):
            try:
                await replier.deliver(delivery)
                break
            except Exception as exc:  # a platform error must not kill the follower: retry, then leave it journaled
                platform = record.request.requester.platform
                if delay is None:
                    metrics.DELIVERY_FAILURES.labels(platform).inc()
                    log.error("delivering job %s failed %d times (%s); it stays undelivered", record.id, attempt, exc)
                    await journal_place(self._jobs, record.id, replier)  # what did get posted, for the next try
                    return Outcome.FAILED, f"{type(exc).__name__}: {exc}"
                metrics.DELIVERY_RETRIES.labels(platform).inc()
                log.warning("delivering job %s failed (%s); retrying in %.1f s", record.id, exc, delay)
                await asyncio.sleep(delay)
        if not await self._ledger.mark_delivered(record.id, self.owner):
            log.warning("job %s was posted after its delivery claim ran out: it may have been posted twice", record.id)
        await self._jobs.mark_delivered(record.id)
        log.info("job %s delivered to %s", record.id, record.request.requester.key)
        if any(image.withheld for image in record.images):
            await self._on_withheld(record)
        return Outcome.DELIVERED, ""

    @contextlib.asynccontextmanager
    async def _claim(self, job_id: str) -> AsyncIterator[bool]:
        """Hold the job's delivery claim (renewed in the background) for the block; give it back after unless
        the block settled it (delivered, or a failure recorded)."""
        if not await self._ledger.claim(job_id, self.owner, CLAIM_LEASE_S):
            yield False
            return
        renewing = asyncio.create_task(self._renew(job_id), name=f"renew-claim-{job_id}")
        try:
            yield True
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            # A no-op once the claim was settled; still tried when the task was cancelled (shutting down).
            await logged(self._ledger.release(job_id, self.owner), f"giving back the claim on job {job_id}")

    async def _renew(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_LEASE_S / 3)
            renewed = await logged(self._ledger.renew(job_id, self.owner, CLAIM_LEASE_S), "renewing a claim")
            if not renewed:
                log.warning("lost the delivery claim on job %s: another process may post it too", job_id)
                return
