"""The in-process job queue: the `JobQueue` (engine/api.py) for one process, with the GPU worker in a thread.

    queue = LocalJobQueue(settings)
    await queue.start()                      # opens the store, loads the model, resumes journaled jobs
    job = await queue.submit(GenerationRequest(prompt="a lighthouse at dawn"))
    async for event in job.events(): ...     # queued (position N) -> running (step k/n) -> done
    result = await job.result()              # four GeneratedImage with their seeds and JPEG paths
    await queue.shutdown()                   # stop taking work, drain (or hand back), close

It owns the queue (fair round-robin across users, `engine/scheduler.py`), the journal and the jobs' lifecycle;
`engine/worker/batches.py` runs each batch through the pipeline. Importing this module loads the worker, and so
torch: the chat side imports it only where it composes the service.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from config.settings import Settings
from engine import messages, metrics
from engine.errors import EngineClosed, GenerationFailed, JobCancelled, NotAllowed, QueueFull
from engine.jobs import Job
from engine.postprocess import PostProcessor
from engine.requests import GenerationRequest, JobState, Requester
from engine.scheduler import FairQueue
from engine.screening import ImageScreener
from engine.store import JobRecord, JobStore
from engine.validation import batch_key, prepare_record
from engine.worker.batches import BatchWorker, load_runner
from engine.worker.finishing import ImageFinisher, Withhold, blur, build_postprocessor
from engine.worker.runner import PipelineRunner

log = logging.getLogger(__name__)
T = TypeVar("T")
FINISHED_JOBS_KEPT = 1000

RunnerFactory = Callable[[], PipelineRunner]


class QueueState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class LocalJobQueue:
    def __init__(
        self,
        settings: Settings,
        *,
        runner_factory: RunnerFactory | None = None,
        store: JobStore | None = None,
        postprocessor: PostProcessor | None = None,
        screener: ImageScreener | None = None,
        withhold: Withhold | None = None,
        output_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self._config = settings.engine
        self._runner_factory = runner_factory or (lambda: load_runner(settings))
        self._output_dir = Path(output_dir or self._config.output_dir).expanduser()
        self._store = store
        finisher = ImageFinisher(
            postprocessor or build_postprocessor(settings), self._output_dir, screener, withhold or blur
        )
        self._worker = BatchWorker(self._config, finisher, self._end)
        self._state = QueueState.NEW
        self._queue: FairQueue[Job] = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._running: list[Job] = []
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._drain = True
        self._loop_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @property
    def state(self) -> QueueState:
        return self._state

    @property
    def accepting(self) -> bool:
        return self._state is QueueState.RUNNING

    @property
    def model_name(self) -> str:
        return self._worker.model_name

    @property
    def pipeline_calls(self) -> int:
        return self._worker.pipeline_calls

    async def start(self) -> None:
        if self._state is not QueueState.NEW:
            raise RuntimeError(f"start() called in state {self._state.value}")
        self._output_dir.mkdir(parents=True, exist_ok=True)
        if self._store is None:  # none given: one on a database of its own (closed with the store)
            self._store = await JobStore.open(self.settings.store.url)
        await self._worker.load(self._runner_factory, self._store)
        await self._resume_journaled_jobs()
        self._state = QueueState.RUNNING
        self._loop_task = asyncio.create_task(self._work(), name="imagine-engine-worker")

    async def shutdown(self, drain: bool = True) -> None:
        """Stop taking work; with `drain`, finish everything queued; without, hand running and queued jobs
        back to the journal (they resume on the next start). Then close threads and the store."""
        if self._state is QueueState.STOPPING and self._drain and not drain:
            self._hurry()  # a draining shutdown is under way: hand back instead; that call then finishes
            return
        if self._state in (QueueState.STOPPING, QueueState.STOPPED):
            return
        if self._state is QueueState.NEW:
            self._state = QueueState.STOPPED
            await self._close()
            return
        self._state = QueueState.STOPPING
        self._drain = True
        if not drain:
            self._hurry()
        self._wakeup.set()
        if self._loop_task:
            await self._loop_task
        await self._close()
        self._state = QueueState.STOPPED

    async def _close(self) -> None:
        await self._worker.close()
        if self._store is not None:
            await self._store.close()

    # ---- the job API -----------------------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> Job:
        """Validate, journal and queue a request. Raises InvalidRequest, QueueFull or EngineClosed."""
        if self._state is not QueueState.RUNNING:
            raise EngineClosed(messages.NOT_RUNNING)
        record = prepare_record(request, self._config)
        if len(self._queue) + self._reserved >= self._config.queue_size:
            raise QueueFull(messages.QUEUE_FULL.format(size=self._config.queue_size))
        self._reserved += 1
        try:
            await self._store_required().add(record)
        finally:
            self._reserved -= 1
        job = Job(record)
        self._enqueue(job)
        log.info(
            "job %s queued for %s (%d images %dx%d, %d steps)",
            job.id,
            job.user_key,
            job.image_count,
            record.width,
            record.height,
            record.steps,
        )
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def active(self, platform: str | None = None) -> list[Job]:
        """Queued and running jobs, e.g. for an adapter to follow after a restart."""
        return self.active_jobs(platform)

    def active_jobs(self, platform: str | None = None) -> list[Job]:
        """`active()` without awaiting: this process holds every job in memory."""
        return [
            job
            for job in self._jobs.values()
            if not job.state.finished and (platform is None or job.request.requester.platform == platform)
        ]

    async def cancel(self, job_id: str, by: Requester | None = None) -> bool:
        """Cancel a queued or running job; False if it is unknown or already finished. Only its requester
        may cancel it when `by` is given (NotAllowed otherwise)."""
        job = self._jobs.get(job_id)
        if job is None or job.state.finished:
            return False
        if by is not None and by.key != job.user_key:
            raise NotAllowed(messages.NOT_YOURS)
        job.cancel_requested = True
        if job.state is JobState.QUEUED:
            self._queue.remove(job)
            self._update_positions()
        await self._end(job, JobState.CANCELLED, JobCancelled(messages.CANCELLED))
        return True

    async def lookup(self, job_id: str) -> JobRecord | None:
        return await self._store_required().get(job_id)

    async def undelivered(self, platform: str | None = None) -> list[JobRecord]:
        """Finished jobs whose images nobody has confirmed delivering (e.g. the bot restarted in between)."""
        records = await self._store_required().in_states([JobState.DONE])
        return [record for record in records if platform is None or record.request.requester.platform == platform]

    async def update_delivery(self, job_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the job's journaled delivery context (e.g. the status message an adapter just
        posted), so that after a restart the adapter edits that message instead of posting another."""
        job = self._jobs.get(job_id)
        record = job.record if job is not None else await self.lookup(job_id)
        if record is None:
            return
        request = await self._store_required().merge_delivery(record, changes)
        if request is not None and job is not None:
            job.record = replace(job.record, request=request)

    async def mark_delivered(self, job_id: str) -> None:
        await self._store_required().set_state(job_id, JobState.DELIVERED)
        job = self._jobs.get(job_id)
        if job is not None:
            job.state = JobState.DELIVERED

    async def readiness(self) -> dict[str, bool]:
        """Named checks for /readyz: the model is loaded and taking work, the worker loop runs, and it is not
        stuck (a batch started or stepped within the job timeout, or there is nothing to do)."""
        loop_runs = self._loop_task is not None and not self._loop_task.done()
        idle = not len(self._queue) and not self._running
        recent = time.monotonic() - self._worker.last_progress_at < self._config.job_timeout_s
        return {"model_loaded": self.accepting, "worker_loop": loop_runs, "worker_progress": idle or recent}

    def queued_count(self, user_key: str) -> int:
        """Jobs of this user waiting or running (for the per-user queue cap)."""
        return sum(1 for job in self._jobs.values() if job.user_key == user_key and not job.state.finished)

    # ---- queueing ----------------------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._forget_old_jobs()
        self._queue.push(job)
        self._update_positions()
        self._wakeup.set()

    def _update_positions(self) -> None:
        metrics.QUEUE_DEPTH.labels("memory").set(len(self._queue))
        for position, job in enumerate(self._queue.service_order(), start=1):
            if job.position != position:
                job.position = position
                job.publish()

    def _forget_old_jobs(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state.finished]
        for job_id in finished[: max(0, len(finished) - FINISHED_JOBS_KEPT)]:
            del self._jobs[job_id]

    async def _resume_journaled_jobs(self) -> None:
        records = await self._store_required().in_states([JobState.QUEUED, JobState.RUNNING])
        for record in records:
            if record.state is JobState.RUNNING:
                await self._store_required().set_state(record.id, JobState.QUEUED)
            self._enqueue(Job(replace(record, state=JobState.QUEUED)))
        if records:
            log.info("resumed %d journaled jobs", len(records))

    def _hurry(self) -> None:
        self._drain = False
        self._hand_back_all()
        self._wakeup.set()

    def _hand_back_all(self) -> None:
        """Shutdown without draining: running jobs stop at their next step and stay journaled as queued."""
        closed = EngineClosed(messages.RESTARTING)
        for job in self._queue.service_order():
            self._queue.remove(job)
            job.handed_back = True
            job.finish(JobState.QUEUED, error=closed)
        for job in self._running:
            job.handed_back = True

    async def _work(self) -> None:
        while True:
            if self._state is QueueState.STOPPING and (not self._drain or not len(self._queue)):
                return
            batch = self._queue.take_batch(self._config.max_batch_images, _same_shape)
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._update_positions()
            self._running = batch
            try:
                await self._worker.run(batch)
            except Exception:  # a bug here must not kill the loop and strand every later job
                log.exception("batch of jobs %s failed unexpectedly", [job.id for job in batch])
                for job in batch:
                    await self._end(job, JobState.FAILED, GenerationFailed(messages.INTERNAL_ERROR))
            finally:
                self._running = []

    def _store_required(self) -> JobStore:
        if self._store is None:
            raise EngineClosed(messages.NOT_STARTED)
        return self._store

    async def _end(self, job: Job, state: JobState, error: Exception) -> None:
        if job.state.finished:
            return
        kind = getattr(error, "kind", "error")
        job.state = state  # at once, so a racing ending sees it
        await self._store_required().set_state(job.id, state, kind, str(error))
        job.finish(state, error=error)


def _same_shape(first: Job, other: Job) -> bool:
    """Text prompts batch with text prompts of one shape, image prompts with image prompts (engine/validation.py)."""
    return batch_key(first.record) == batch_key(other.record)
