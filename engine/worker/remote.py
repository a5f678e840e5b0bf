"""`imagine worker`: the GPU process of the scale-out mode. Loads the model, reads jobs from the Redis streams
(engine/redis_streams.py) with the consumer group "workers", runs them through `BatchWorker`, journals them in the
shared database and sends their events to the frontend that owns each job. No chat code.

    worker = RemoteWorker(settings)
    await worker.start()          # the store, the model, Redis
    await worker.run(stop)        # until `stop` is set: then finishes what it holds (drain) and returns
    await worker.close()

The loop, one batch at a time: take over jobs whose worker is gone (XAUTOCLAIM of entries idle for
`reclaim_after_heartbeats` heartbeats; past `max_deliveries`, dead-letter them and tell their requester), else
read new ones (XREADGROUP COUNT <jobs per batch>, one stream = one shape), then run the batch. Meanwhile a
heartbeat renews every job it holds (XCLAIM JUSTID, only while this consumer still owns it) and picks up cancel
requests; an outbox sends events in order and acknowledges a job (XACK + XDEL, its user's slot to the next job)
only after its result or failure is in the database. Redis errors are retried: nothing held is dropped, and
after an outage the worker waits a full reclaim period before taking anyone's jobs (live workers renew first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from config.settings import Settings
from engine import messages
from engine.errors import EngineClosed, EngineError, GenerationFailed, JobCancelled
from engine.jobs import Job
from engine.postprocess import PostProcessor
from engine.redis_streams import Entry, StreamQueue, connect, final_event, redact
from engine.requests import GeneratedImage, JobState, ProgressEvent
from engine.screening import ImageScreener
from engine.store import JobRecord, JobStore
from engine.worker.batches import BatchWorker, load_runner
from engine.worker.finishing import ImageFinisher, Withhold, blur, build_postprocessor
from engine.worker.runner import PipelineRunner

log = logging.getLogger(__name__)
MAX_RETRY_DELAY_S = 5.0
CONSUMERS_PRUNED_EVERY_S = 600.0
CONSUMER_FORGOTTEN_AFTER_S = 3600.0


class DeadLetter(EngineError):
    kind = "dead_letter"


class RemoteJob(Job):
    """A job this worker holds: its stream entry, the frontend to tell, and whether it was lost to another
    worker (then this one stops it and says nothing more about it)."""

    def __init__(self, record: JobRecord, entry: Entry, owner: str, outbox: Callable[[RemoteJob], None]) -> None:
        super().__init__(record)
        self.entry = entry
        self.owner = owner
        self.lost = False
        self._outbox = outbox
        self.enqueued_at = time.monotonic() - max(0.0, time.time() - record.created_at)  # for its queue wait

    def publish(self) -> None:
        super().publish()
        if not self.lost:
            self._outbox(self)


@dataclass(frozen=True)
class _Outgoing:
    job: RemoteJob
    event: ProgressEvent


class _Journal:
    """The job store as batches see it, minus writes about jobs this worker has lost to another."""

    def __init__(self, store: JobStore, lost: Callable[[str], bool]) -> None:
        self._store = store
        self._lost = lost

    async def set_state(
        self, job_id: str, state: JobState, error_kind: str | None = None, error: str | None = None
    ) -> None:
        if not self._lost(job_id):
            await self._store.set_state(job_id, state, error_kind, error)

    async def set_done(self, job_id: str, images: Sequence[GeneratedImage]) -> None:
        if not self._lost(job_id):
            await self._store.set_done(job_id, images)


class RemoteWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        runner_factory: Callable[[], PipelineRunner] | None = None,
        store: JobStore | None = None,
        postprocessor: PostProcessor | None = None,
        screener: ImageScreener | None = None,
        withhold: Withhold | None = None,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self._config = config = settings.engine
        self._runner_factory = runner_factory or (lambda: load_runner(settings))
        self._output_dir = Path(config.output_dir).expanduser()
        finisher = ImageFinisher(
            postprocessor or build_postprocessor(settings), self._output_dir, screener, withhold or blur
        )
        self._worker = BatchWorker(config, finisher, self._end)
        self._store = store
        self._owns_store = store is None
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.streams = StreamQueue(connect(config.redis_url), config)
        self._held: dict[str, RemoteJob] = {}
        self._waiting: list[RemoteJob] = []
        self._lost: set[str] = set()
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._rotation = 0
        self._next_prune = 0.0
        self._redis_ok_since = time.monotonic()
        self._jobs_per_read = max(1, config.max_batch_images // max(1, config.images_per_prompt))
        # A live worker renews its jobs every heartbeat, so their idle time stays near one heartbeat. Taking them
        # at (n - 0.5) heartbeats of silence, looking every quarter heartbeat, starts a dead worker's job
        # elsewhere within n heartbeats of its death (n = reclaim_after_heartbeats, 3 by default).
        self.reclaim_idle_s = config.heartbeat_s * (config.reclaim_after_heartbeats - 0.5)
        # what tests and the benchmark watch
        self.started: list[tuple[float, str]] = []
        """(time.monotonic(), job id) of every job this worker started running."""
        self.heartbeats = 0
        self.janitor_rounds = 0
        self._loaded = False
        self._last_heartbeat_at = time.monotonic()

    @property
    def pipeline_calls(self) -> int:
        return self._worker.pipeline_calls

    async def start(self) -> None:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        if self._store is None:
            self._store = await JobStore.open(self.settings.store.url)
        await self._worker.load(self._runner_factory, _Journal(self._store, self._lost.__contains__))
        await self.streams.redis.ping()  # type: ignore[misc]  # a clear error at start when Redis is not there
        self._loaded = True
        # Counted from here, not from construction: loading the model takes longer than the reclaim period, and a
        # worker that has just started holds nothing another could take over.
        self._last_heartbeat_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="imagine-heartbeat"),
            asyncio.create_task(self._send_loop(), name="imagine-outbox"),
        ]
        log.info(
            "worker %s on Redis %s: heartbeat %.1f s, reclaim after %.1f s idle",
            self.consumer,
            redact(self._config.redis_url),
            self._config.heartbeat_s,
            self.reclaim_idle_s,
        )

    def hand_back(self) -> None:
        """Stop at once instead of finishing (a second signal): waiting jobs go back to their stream now, running
        ones at their next step; another worker takes them (`run()` then returns as soon as that is sent)."""
        handed_back = EngineClosed(messages.RESTARTING)
        for job in list(self._held.values()):
            job.handed_back = True
        for job in self._waiting:
            job.finish(JobState.QUEUED, error=handed_back)  # its QUEUED event requeues it (see _deliver)
        self._waiting.clear()
        log.info("worker %s: handing back the %d job(s) it holds", self.consumer, len(self._held))

    async def readiness(self) -> dict[str, bool]:
        """/readyz of `imagine worker`: the model is loaded, Redis answers, the heartbeat renewed this worker's
        jobs within the reclaim period (else other workers are taking them over), and it is not stuck."""
        try:
            async with asyncio.timeout(2.0):
                redis = bool(await self.streams.redis.ping())  # type: ignore[misc]
        except (TimeoutError, RedisError, OSError):
            redis = False
        now = time.monotonic()
        heartbeat = now - self._last_heartbeat_at < self.reclaim_idle_s
        stepping = not self._held or now - self._worker.last_progress_at < self._config.job_timeout_s
        return {"model_loaded": self._loaded, "redis": redis, "heartbeat": heartbeat, "worker_progress": stepping}

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then finish what this worker holds and send every event."""
        delay = 0.2
        while not stop.is_set():
            try:
                if not self._waiting:
                    await self._reclaim()
                if not self._waiting:
                    await self._read()
                delay = 0.2
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)
        while self._waiting:
            await self._run_batch(self._take_batch())
        await self._worker.finish_pending()
        await self._outbox.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._worker.close()
        await self.streams.redis.aclose()
        if self._store is not None and self._owns_store:
            await self._store.close()

    # ---- taking jobs ---------------------------------------------------------------------------------------

    async def _read(self) -> None:
        streams = await self.streams.job_streams()
        if not streams:
            await asyncio.sleep(self._config.heartbeat_s / 4)
            return
        self._rotation = (self._rotation + 1) % len(streams)
        ordered = streams[self._rotation :] + streams[: self._rotation]
        for stream in ordered:  # without blocking, one stream at a time: one read fills one batch
            entries = await self.streams.read(self.consumer, [stream], self._jobs_per_read, None)
            if entries:
                await self._admit(entries)
                return
        block_ms = max(1, int(self._config.heartbeat_s * 250))
        await self._admit(await self.streams.read(self.consumer, ordered, self._jobs_per_read, block_ms))

    async def _reclaim(self) -> None:
        """Take over the jobs of workers gone silent; dead-letter those that went through too many."""
        if time.monotonic() - self._redis_ok_since < self.reclaim_idle_s:
            return  # just (re)connected: live workers have not had a chance to renew their jobs yet
        self.janitor_rounds += 1
        min_idle_ms = int(self.reclaim_idle_s * 1000)
        streams = await self.streams.job_streams()
        if time.monotonic() >= self._next_prune:  # gone workers' names, once they hold nothing
            self._next_prune = time.monotonic() + CONSUMERS_PRUNED_EVERY_S
            for stream in streams:
                await self.streams.prune_consumers(stream, int(CONSUMER_FORGOTTEN_AFTER_S * 1000), self.consumer)
        for stream in streams:
            entries = await self.streams.reclaim(self.consumer, stream, min_idle_ms, self._jobs_per_read)
            runnable = []
            for entry in entries:
                if entry.job_id in self._held:
                    continue  # its own (its idle time outgrew a Redis outage): it is still running it
                log.warning("job %s reclaimed from a silent worker (delivery %d)", entry.job_id, entry.deliveries)
                if entry.deliveries > self._config.max_deliveries:
                    await self._dead_letter(entry)
                else:
                    runnable.append(entry)
            await self._admit(runnable)
            if self._waiting:
                return

    async def _admit(self, entries: Sequence[Entry]) -> None:
        for entry, started in zip(entries, await self.streams.start_many(entries, self.consumer), strict=True):
            if started is None:  # cancelled while queued, or moved: only the acknowledgement is left
                await self.streams.complete(entry)
                continue
            journaled = await self._store_required().get(entry.job_id)
            if journaled is None or journaled.state.finished:
                # Already ended: its worker died between journaling the end and acknowledging it, or it was
                # queued again after an outage. Its frontend may not have heard: tell it (events are at least
                # once; delivery to chat is once, by the claims in the database), then acknowledge.
                if journaled is not None:
                    await self.streams.publish(started.owner, final_event(journaled))
                await self.streams.complete(entry)
                continue
            job = RemoteJob(started.record, entry, started.owner, self._send)
            self._held[job.id] = job
            if started.cancelled:
                job.cancel_requested = True
                await self._end(job, JobState.CANCELLED, JobCancelled(messages.CANCELLED))
                continue
            self._waiting.append(job)

    def _take_batch(self) -> list[RemoteJob]:
        if not self._waiting:
            return []
        first = self._waiting[0]
        batch, images = [first], first.image_count
        for job in self._waiting[1:]:
            if job.entry.stream == first.entry.stream and images + job.image_count <= self._config.max_batch_images:
                batch.append(job)
                images += job.image_count
        for job in batch:
            self._waiting.remove(job)
        return batch

    async def _run_batch(self, batch: list[RemoteJob]) -> None:
        batch = [job for job in batch if not job.state.finished and not job.lost]
        if not batch:
            return
        now = time.monotonic()
        self.started.extend((now, job.id) for job in batch)
        try:
            await self._worker.run(list(batch))
        except Exception:  # a bug here must not kill the loop and strand every later job
            log.exception("batch of jobs %s failed unexpectedly", [job.id for job in batch])
            for job in batch:
                await self._end(job, JobState.FAILED, GenerationFailed(messages.INTERNAL_ERROR))

    async def _dead_letter(self, entry: Entry) -> None:
        error = DeadLetter(messages.DEAD_LETTER.format(count=entry.deliveries - 1))
        log.error("job %s dead-lettered after %d deliveries", entry.job_id, entry.deliveries)
        await self._store_required().set_state(entry.job_id, JobState.FAILED, error.kind, str(error))
        owner = await self.streams.owner(entry.job_id)
        if owner is not None:
            event = ProgressEvent(job_id=entry.job_id, state=JobState.FAILED, error_kind=error.kind, error=str(error))
            await self.streams.publish(owner, event)
        await self.streams.complete(entry, dead_reason=str(error))

    # ---- ending, events, acknowledgements ------------------------------------------------------------------

    async def _end(self, job: Job, state: JobState, error: Exception) -> None:
        if job.state.finished:
            return
        kind = getattr(error, "kind", "error")
        job.state = state
        if not (isinstance(job, RemoteJob) and job.lost):
            await self._store_required().set_state(job.id, state, kind, str(error))
        job.finish(state, error=error)  # (its one log line: engine/metrics.py)

    def _send(self, job: RemoteJob) -> None:
        self._outbox.put_nowait(_Outgoing(job, job.snapshot()))

    async def _send_loop(self) -> None:
        """Events in order; a job's acknowledgement after its final event (and so after its result is stored)."""
        while True:
            item = await self._outbox.get()
            delay = 0.2
            while True:
                try:
                    await self._deliver(item)
                    break
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY_S)
            self._outbox.task_done()

    async def _deliver(self, item: _Outgoing) -> None:
        job, event = item.job, item.event
        if job.lost:
            return
        if event.state is JobState.QUEUED and job.handed_back:
            await self.streams.requeue(job.entry)  # stopping without finishing: back to the stream for another
            self._forget(job)
            return
        await self.streams.publish(job.owner, event)
        if event.state.finished:
            await self.streams.complete(job.entry)
            self._forget(job)

    def _forget(self, job: RemoteJob) -> None:
        if self._held.get(job.id) is job:
            del self._held[job.id]

    # ---- heartbeat -----------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            try:
                await self._heartbeat()
                self._last_heartbeat_at = time.monotonic()
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)

    async def _heartbeat(self) -> None:
        """Renew every held job (waiting, running or finishing); stop those lost to another worker, end those
        whose requester cancelled them."""
        by_stream: dict[str, list[RemoteJob]] = {}
        for job in self._held.values():
            by_stream.setdefault(job.entry.stream, []).append(job)
        for stream, jobs in by_stream.items():
            lost, cancelled = await self.streams.heartbeat(self.consumer, stream, [job.entry for job in jobs])
            for job_id in lost:
                self._lose(job_id)
            for job_id in cancelled:
                held = self._held.get(job_id)
                if held is not None and not held.state.finished:
                    held.cancel_requested = True
                    if held in self._waiting:
                        self._waiting.remove(held)
                    await self._end(held, JobState.CANCELLED, JobCancelled(messages.CANCELLED))
        self.heartbeats += 1

    def _lose(self, job_id: str) -> None:
        job = self._held.pop(job_id, None)
        if job is None:
            return
        log.error("job %s was taken over by another worker (this one went silent too long): stopping it", job_id)
        job.lost = True
        job.handed_back = True
        self._lost.add(job_id)
        if job in self._waiting:
            self._waiting.remove(job)

    def _redis_failed(self, exc: BaseException) -> None:
        log.error("Redis at %s: %s; retrying", redact(self._config.redis_url), exc)
        self._redis_ok_since = time.monotonic()  # counted again from the last failure

    def _store_required(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("RemoteWorker.start() first")
        return self._store


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass
