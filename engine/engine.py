"""The async engine: owns the pipeline, queues jobs fairly, batches them, post-processes and journals results.

    engine = Engine(settings)
    await engine.start()                     # loads the model in the pipeline thread, resumes journaled jobs
    job = await engine.submit(GenerationRequest(prompt="a lighthouse at dawn"))
    async for event in job.events(): ...     # queued (position N) -> running (step k/n) -> done
    result = await job.result()              # four GeneratedImage with their seeds and JPEG paths
    await engine.shutdown()                  # stop taking work, drain (or hand back), close

Threads: the pipeline runs in one dedicated thread; post-processing (screening, label, watermark, JPEG
encode, file writes) in a small pool so it overlaps the next generation. The job store is async
(storage/): the event loop only schedules and awaits it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from config.settings import EngineSettings, Settings
from engine.errors import (
    EngineClosed,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    JobCancelled,
    NotAllowed,
    OutOfMemory,
    QueueFull,
)
from engine.finishing import ImageFinisher, Withhold, blur
from engine.jobs import Job
from engine.postprocess import ImageContext, PostProcessor, build_postprocessor
from engine.requests import (
    MAX_SEED,
    GenerationRequest,
    JobResult,
    JobState,
    Requester,
    Timings,
    check_seed,
    clean_prompt,
    size_for_aspect,
)
from engine.runner import BatchShape, ImageTask, PipelineRunner, StopBatch, is_out_of_memory
from engine.scheduler import FairQueue
from engine.screening import ImageScreener
from engine.store import JobRecord, JobStore

log = logging.getLogger(__name__)
MAX_IMAGES_PER_JOB = 8
MAX_SIDE = 2048
FINISHED_JOBS_KEPT = 1000


class EngineState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


RunnerFactory = Callable[[], PipelineRunner]


class Engine:
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
        self._store = store
        self._output_dir = Path(output_dir or self._config.output_dir).expanduser()
        self._finisher = ImageFinisher(postprocessor or build_postprocessor(settings), self._output_dir, screener,
                                       withhold or blur)
        self._state = EngineState.NEW
        self._runner: PipelineRunner | None = None
        self._queue: FairQueue[Job] = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._running: list[Job] = []
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._drain = True
        self._worker: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="imagine-pipeline")
        self._post_threads = ThreadPoolExecutor(self._config.postprocess_threads, thread_name_prefix="imagine-post")
        self.pipeline_calls = 0

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def model_name(self) -> str:
        return self._runner.model_name if self._runner else self._config.model

    async def start(self) -> None:
        if self._state is not EngineState.NEW:
            raise RuntimeError(f"engine.start() called in state {self._state.value}")
        loop = asyncio.get_running_loop()
        self._output_dir.mkdir(parents=True, exist_ok=True)
        if self._store is None:
            self._store = await JobStore.open(self.settings.store.url)
        self._runner = await loop.run_in_executor(self._pipeline_thread, self._runner_factory)
        await self._resume_journaled_jobs()
        self._state = EngineState.RUNNING
        self._worker = asyncio.create_task(self._work(), name="imagine-engine-worker")

    async def shutdown(self, drain: bool = True) -> None:
        """Stop taking work; with `drain`, finish everything queued; without, hand running and queued jobs
        back to the journal (they resume on the next start). Then close threads and the store."""
        if self._state is EngineState.STOPPING and self._drain and not drain:
            self._hurry()  # a draining shutdown is under way: hand back instead; that call then finishes
            return
        if self._state in (EngineState.STOPPING, EngineState.STOPPED):
            return
        if self._state is EngineState.NEW:
            self._state = EngineState.STOPPED
            await self._close_threads()
            return
        self._state = EngineState.STOPPING
        self._drain = True
        if not drain:
            self._hurry()
        self._wakeup.set()
        if self._worker:
            await self._worker
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        await self._close_threads()
        self._state = EngineState.STOPPED

    async def _close_threads(self) -> None:
        for pool in (self._pipeline_thread, self._post_threads):
            await asyncio.to_thread(pool.shutdown, wait=True)
        if self._store is not None:
            await self._store.close()

    # ---- the public API ----------------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> Job:
        """Validate, journal and queue a request. Raises InvalidRequest, QueueFull or EngineClosed."""
        if self._state is not EngineState.RUNNING:
            raise EngineClosed("the engine is not taking new work right now")
        record = prepare_record(request, self._config)
        if len(self._queue) + self._reserved >= self._config.queue_size:
            raise QueueFull(f"the queue is full ({self._config.queue_size} jobs)")
        self._reserved += 1
        try:
            await self._store_required().add(record)
        finally:
            self._reserved -= 1
        job = Job(record)
        self._enqueue(job)
        log.info("job %s queued for %s (%d images %dx%d, %d steps)", job.id, job.user_key, job.image_count,
                 record.width, record.height, record.steps)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def active_jobs(self, platform: str | None = None) -> list[Job]:
        """Queued and running jobs, e.g. for an adapter to follow after a restart."""
        return [job for job in self._jobs.values() if not job.state.finished
                and (platform is None or job.request.requester.platform == platform)]

    async def cancel(self, job_id: str, by: Requester | None = None) -> bool:
        """Cancel a queued or running job; False if it is unknown or already finished. Only its requester
        may cancel it when `by` is given (NotAllowed otherwise)."""
        job = self._jobs.get(job_id)
        if job is None or job.state.finished:
            return False
        if by is not None and by.key != job.user_key:
            raise NotAllowed("only the person who asked for these images can cancel them")
        job.cancel_requested = True
        if job.state is JobState.QUEUED:
            self._queue.remove(job)
            self._update_positions()
        await self._end(job, JobState.CANCELLED, JobCancelled("cancelled by request"))
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
        delivery = {**record.request.delivery, **changes}
        if delivery == record.request.delivery:
            return
        request = replace(record.request, delivery=delivery)
        await self._store_required().set_request(job_id, request)
        if job is not None:
            job.record = replace(job.record, request=request)

    async def mark_delivered(self, job_id: str) -> None:
        await self._store_required().set_state(job_id, JobState.DELIVERED)
        job = self._jobs.get(job_id)
        if job is not None:
            job.state = JobState.DELIVERED

    def queued_count(self, user_key: str) -> int:
        """Jobs of this user waiting or running (for the per-user queue cap)."""
        return sum(1 for job in self._jobs.values() if job.user_key == user_key and not job.state.finished)

    # ---- queueing ----------------------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._forget_old_jobs()
        self._queue.push(job)
        self._update_positions()
        self._idle.clear()
        self._wakeup.set()

    def _update_positions(self) -> None:
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
            self._enqueue(Job(JobRecord(**{**record.__dict__, "state": JobState.QUEUED})))
        if records:
            log.info("resumed %d journaled jobs", len(records))

    def _hurry(self) -> None:
        self._drain = False
        self._hand_back_all()
        self._wakeup.set()

    def _hand_back_all(self) -> None:
        """Shutdown without draining: running jobs stop at their next step and stay journaled as queued."""
        closed = EngineClosed("the service is restarting; the job will resume when it is back")
        for job in self._queue.service_order():
            self._queue.remove(job)
            job.handed_back = True
            job.finish(JobState.QUEUED, error=closed)
        for job in self._running:
            job.handed_back = True

    # ---- the worker ----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            if self._state is EngineState.STOPPING and (not self._drain or not len(self._queue)):
                return
            batch = self._queue.take_batch(self._config.max_batch_images, _same_shape)
            if not batch:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._update_positions()
            try:
                await self._run_batch(batch)
            except Exception:  # a bug here must not kill the worker and strand every later job
                log.exception("batch of jobs %s failed unexpectedly", [job.id for job in batch])
                for job in batch:
                    await self._end(job, JobState.FAILED, GenerationFailed("an internal error stopped the job"))

    async def _run_batch(self, batch: list[Job]) -> None:
        now = time.monotonic()
        for job in batch:
            job.state, job.started_at = JobState.RUNNING, now
            job.deadline = now + self._config.job_timeout_s
            job.position = None
            await self._store_required().set_state(job.id, JobState.RUNNING)
            job.publish()
        self._running = batch
        try:
            images = await self._generate_jobs(batch)
        finally:
            self._running = []
        for job in batch:
            await self._after_generation(job, images)

    async def _generate_jobs(self, jobs: list[Job]) -> dict[tuple[str, int], Image.Image | BaseException]:
        """Images per (job id, index); a job whose images failed gets its exception there instead."""
        tasks = [_image_task(job, index) for job in jobs for index in range(job.image_count)]
        try:
            return await self._generate_tasks(jobs, tasks)
        except StopBatch:
            return {}
        except Exception as exc:
            if len(jobs) > 1:  # find the job at fault: each alone, so only it fails
                log.warning("batch failed (%s); retrying its %d jobs one by one", exc, len(jobs))
                results: dict[tuple[str, int], Image.Image | BaseException] = {}
                for job in jobs:
                    if not job.stop_requested:
                        results |= await self._generate_jobs([job])
                return results
            return {(jobs[0].id, index): exc for index in range(jobs[0].image_count)}

    async def _generate_tasks(self, jobs: list[Job], tasks: list[ImageTask]) -> dict[tuple[str, int], Any]:
        """One pipeline call; on out-of-memory, split the images in halves and try again."""
        loop = asyncio.get_running_loop()
        involved = [job for job in jobs if any(task.job_id == job.id for task in tasks)]
        shape = BatchShape(width=involved[0].record.width, height=involved[0].record.height,
                           steps=involved[0].record.steps)
        on_step = self._step_callback(loop, involved)
        try:
            self.pipeline_calls += 1
            images = await loop.run_in_executor(self._pipeline_thread, self._runner_required().generate,
                                                tasks, shape, on_step)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(tasks) == 1:
                if is_out_of_memory(exc):
                    raise OutOfMemory("not enough memory to render even one image at this size") from exc
                raise
            half = len(tasks) // 2
            log.warning("out of memory on %d images; retrying as %d + %d", len(tasks), half, len(tasks) - half)
            first = await self._generate_tasks(jobs, tasks[:half])
            return first | await self._generate_tasks(jobs, tasks[half:])
        return {(task.job_id, task.index): image for task, image in zip(tasks, images, strict=True)}

    def _step_callback(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> Callable[[int, int], None]:
        """Runs in the pipeline thread: report progress; stop when no job in the call still wants images."""

        def on_step(step: int, total: int) -> None:
            now = time.monotonic()
            if all(job.stop_requested or job.past_deadline(now) for job in jobs):
                raise StopBatch()
            loop.call_soon_threadsafe(self._publish_step, jobs, step, total)

        return on_step

    @staticmethod
    def _publish_step(jobs: Sequence[Job], step: int, total: int) -> None:
        for job in jobs:
            if job.state is JobState.RUNNING and step > job.step:
                job.step, job.total_steps = step, total
                job.publish()

    async def _after_generation(self, job: Job, images: dict[tuple[str, int], Any]) -> None:
        if job.state.finished:
            return  # cancelled while running: already reported
        if job.handed_back:
            await self._store_required().set_state(job.id, JobState.QUEUED)
            job.finish(JobState.QUEUED, error=EngineClosed("the service is restarting; the job will resume"))
            return
        outcomes = [images.get((job.id, index)) for index in range(job.image_count)]
        if job.past_deadline(time.monotonic()) or any(outcome is None for outcome in outcomes):
            timeout = self._config.job_timeout_s
            await self._end(job, JobState.FAILED, GenerationTimeout(f"the job ran past its {timeout:g} s limit"))
            return
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            error = failure if isinstance(failure, OutOfMemory) else GenerationFailed(f"generation failed: {failure}")
            log.error("job %s failed: %r", job.id, failure)
            await self._end(job, JobState.FAILED, error)
            return
        task = asyncio.create_task(self._postprocess_job(job, outcomes), name=f"imagine-post-{job.id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # ---- post-processing ---------------------------------------------------------------------------------

    async def _postprocess_job(self, job: Job, images: list[Image.Image]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            generated = await asyncio.gather(*(
                loop.run_in_executor(self._post_threads, self._finisher.finish, image, self._context(job, index))
                for index, image in enumerate(images)
            ))
        except Exception as exc:
            log.exception("post-processing job %s failed", job.id)
            await self._end(job, JobState.FAILED, GenerationFailed(f"post-processing failed: {exc}"))
            return
        if job.state.finished:
            return
        await self._store_required().set_done(job.id, generated)
        finished = time.monotonic()
        started_at = job.started_at or started
        timings = Timings(queue_wait_s=started_at - job.enqueued_at, generate_s=started - started_at,
                          postprocess_s=finished - started)
        log.info("job %s done for %s: queue wait %.2f s, generate %.2f s, post-process %.2f s", job.id,
                 job.user_key, timings.queue_wait_s, timings.generate_s, timings.postprocess_s)
        job.finish(JobState.DONE, JobResult(job_id=job.id, images=tuple(generated), timings=timings))

    def _context(self, job: Job, index: int) -> ImageContext:
        return ImageContext(job_id=job.id, index=index, seed=job.seeds[index], prompt=job.request.prompt,
                            model=self.model_name)

    # ---- endings and helpers -----------------------------------------------------------------------------

    async def _end(self, job: Job, state: JobState, error: Exception) -> None:
        if job.state.finished:
            return
        kind = getattr(error, "kind", "error")
        job.state = state  # at once, so a racing ending sees it
        await self._store_required().set_state(job.id, state, kind, str(error))
        log.info("job %s %s for %s: %s", job.id, state.value, job.user_key, error)
        job.finish(state, error=error)

    def _store_required(self) -> JobStore:
        if self._store is None:
            raise EngineClosed("the engine has not been started")
        return self._store

    def _runner_required(self) -> PipelineRunner:
        if self._runner is None:
            raise EngineClosed("the engine has not been started")
        return self._runner


def prepare_record(request: GenerationRequest, config: EngineSettings) -> JobRecord:
    """Validate a request against the settings and fix everything that decides its pixels (size, steps,
    seeds): the journaled record reproduces the same images after a restart. Raises InvalidRequest."""
    prompt = clean_prompt(request.prompt, config.max_prompt_chars)
    negative = clean_prompt(request.negative_prompt, config.max_prompt_chars, "negative prompt", False)
    steps = config.steps if request.steps is None else request.steps
    if not 1 <= steps <= config.max_steps:
        raise InvalidRequest(f"steps must be between 1 and {config.max_steps}, got {steps}")
    count = config.images_per_prompt if request.num_images is None else request.num_images
    if not 1 <= count <= MAX_IMAGES_PER_JOB:
        raise InvalidRequest(f"number of images must be between 1 and {MAX_IMAGES_PER_JOB}, got {count}")
    width, height = request.size or size_for_aspect(request.aspect, config.base_size)
    _check_side("width", width)
    _check_side("height", height)
    if request.variation is not None and not 0.0 <= request.variation.strength <= 1.0:
        raise InvalidRequest(f"variation strength must be between 0 and 1, got {request.variation.strength}")
    seed = check_seed(request.seed)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    seeds = tuple((seed + index) % (MAX_SEED + 1) for index in range(count))
    cleaned = GenerationRequest(
        prompt=prompt, requester=request.requester, negative_prompt=negative, seed=seed,
        aspect=request.aspect, steps=steps, num_images=count, size=(width, height),
        variation=request.variation, delivery=dict(request.delivery),
    )
    return JobRecord(id=uuid.uuid4().hex, request=cleaned, seeds=seeds, width=width, height=height,
                     steps=steps, state=JobState.QUEUED, created_at=time.time())



def _check_side(name: str, value: int) -> None:
    if not isinstance(value, int) or value % 8 or not 64 <= value <= MAX_SIDE:
        raise InvalidRequest(f"{name} must be a multiple of 8 between 64 and {MAX_SIDE}, got {value}")


def _same_shape(first: Job, other: Job) -> bool:
    a, b = first.record, other.record
    return (a.width, a.height, a.steps) == (b.width, b.height, b.steps)


def _image_task(job: Job, index: int) -> ImageTask:
    request = job.request
    return ImageTask(job_id=job.id, index=index, seed=job.seeds[index], prompt=request.prompt,
                     negative_prompt=request.negative_prompt, variation=request.variation)


def load_runner(settings: Settings) -> PipelineRunner:
    """Load the configured model (runs in the pipeline thread)."""
    from engine.model import load_pipeline, model_name

    pipe = load_pipeline(settings.engine)
    return PipelineRunner(pipe, model_name(settings.engine.model), settings.engine.guidance_scale)
