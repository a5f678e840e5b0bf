"""Running one batch of jobs: the pipeline call (split in halves on out-of-memory, one job at a time when a batch
fails), per-step progress and stopping, then finishing every image in the post-processing pool.

The pipeline runs in one dedicated thread; post-processing (screening, label, watermark, JPEG encode, file
writes) in a small pool, so it overlaps the next batch. The event loop only schedules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from PIL import Image

from config.settings import EngineSettings, Settings
from engine import messages, metrics
from engine.errors import EngineClosed, GenerationFailed, GenerationTimeout, OutOfMemory
from engine.jobs import Job
from engine.postprocess import ImageContext
from engine.requests import GeneratedImage, JobResult, JobState, Timings
from engine.worker.finishing import ImageFinisher
from engine.worker.runner import BatchShape, ImageTask, PipelineRunner, StopBatch, is_out_of_memory

log = logging.getLogger(__name__)
ImageOutcomes = dict[tuple[str, int], Any]
"""Per (job id, image index): a PIL image, or the exception that stopped it."""


class BatchJournal(Protocol):
    """The job store calls a batch makes (awaited: the store does its own I/O off the event loop)."""

    async def set_state(
        self, job_id: str, state: JobState, error_kind: str | None = None, error: str | None = None
    ) -> None: ...

    async def set_done(self, job_id: str, images: Sequence[GeneratedImage]) -> None: ...


EndJob = Callable[[Job, JobState, Exception], Awaitable[None]]
"""How the queue ends a job (journal, log, tell its listeners)."""


class BatchWorker:
    """Owns the pipeline thread, the post-processing pool and the loaded runner."""

    def __init__(self, config: EngineSettings, finisher: ImageFinisher, end: EndJob) -> None:
        self._config = config
        self._finisher = finisher
        self._journal: BatchJournal | None = None
        self._end = end
        self._runner: PipelineRunner | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="imagine-pipeline")
        self._post_threads = ThreadPoolExecutor(postprocess_pool_size(config), thread_name_prefix="imagine-post")
        self.pipeline_calls = 0
        self.last_progress_at = time.monotonic()
        """When a batch last started or stepped (for readiness: a worker that stopped stepping is stuck)."""

    @property
    def model_name(self) -> str:
        return self._runner.model_name if self._runner else self._config.model

    async def load(self, runner_factory: Callable[[], PipelineRunner], journal: BatchJournal) -> None:
        """Load the model in the pipeline thread (CUDA and friends like to stay in the thread that made them);
        `journal` is where batches record their jobs' states."""
        self._journal = journal
        self._runner = await asyncio.get_running_loop().run_in_executor(self._pipeline_thread, runner_factory)

    async def finish_pending(self) -> None:
        """Wait for post-processing that is still under way."""
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def close(self) -> None:
        await self.finish_pending()
        for pool in (self._pipeline_thread, self._post_threads):
            await asyncio.to_thread(pool.shutdown, wait=True)

    # ---- one batch -----------------------------------------------------------------------------------------

    async def run(self, batch: list[Job]) -> None:
        """Generate every image of `batch` in as few pipeline calls as memory allows, then finish each job."""
        now = self.last_progress_at = time.monotonic()
        for job in batch:
            job.state, job.started_at = JobState.RUNNING, now
            job.deadline = now + self._config.job_timeout_s
            job.position = None
            metrics.QUEUE_WAIT.observe(now - job.enqueued_at)
            await self._journal_required().set_state(job.id, JobState.RUNNING)
            job.publish()
        images = await self._generate_jobs(batch)
        for job in batch:
            await self._after_generation(job, images)

    async def _generate_jobs(self, jobs: list[Job]) -> ImageOutcomes:
        """Images per (job id, index); a job whose images failed gets its exception there instead."""
        tasks = [_image_task(job, index) for job in jobs for index in range(job.image_count)]
        try:
            return await self._generate_tasks(jobs, tasks)
        except StopBatch:
            return {}
        except Exception as exc:
            if len(jobs) > 1:  # find the job at fault: each alone, so only it fails
                log.warning("batch failed (%s); retrying its %d jobs one by one", exc, len(jobs))
                results: ImageOutcomes = {}
                for job in jobs:
                    if not job.stop_requested:
                        results |= await self._generate_jobs([job])
                return results
            return {(jobs[0].id, index): exc for index in range(jobs[0].image_count)}

    async def _generate_tasks(self, jobs: list[Job], tasks: list[ImageTask]) -> ImageOutcomes:
        """One pipeline call per guidance value (diffusers takes one per call); on out-of-memory, split the images
        in halves and try again."""
        guidance_groups = list(dict.fromkeys(task.guidance_scale for task in tasks))
        if len(guidance_groups) > 1:
            results: ImageOutcomes = {}
            for guidance in guidance_groups:
                results |= await self._generate_tasks(jobs, [t for t in tasks if t.guidance_scale == guidance])
            return results
        loop = asyncio.get_running_loop()
        involved = [job for job in jobs if any(task.job_id == job.id for task in tasks)]
        first = involved[0].record
        image_prompt = first.request.image_prompt  # one kind per batch (engine/validation.py batch_key)
        shape = BatchShape(
            width=first.width,
            height=first.height,
            steps=first.steps,
            strength=None if image_prompt is None else image_prompt.strength,
            guidance_scale=guidance_groups[0],
        )
        on_step = self._step_callback(loop, involved)
        try:
            self.pipeline_calls += 1
            metrics.BATCH_SIZE.observe(len(tasks))
            images = await loop.run_in_executor(
                self._pipeline_thread, self._runner_required().generate, tasks, shape, on_step
            )
        except Exception as exc:
            if not is_out_of_memory(exc) or len(tasks) == 1:
                if is_out_of_memory(exc):
                    raise OutOfMemory(messages.OUT_OF_MEMORY) from exc
                raise
            half = len(tasks) // 2
            log.warning("out of memory on %d images; retrying as %d + %d", len(tasks), half, len(tasks) - half)
            first_half = await self._generate_tasks(jobs, tasks[:half])
            return first_half | await self._generate_tasks(jobs, tasks[half:])
        return {(task.job_id, task.index): image for task, image in zip(tasks, images, strict=True)}

    def _step_callback(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> Callable[[int, int], None]:
        """Runs in the pipeline thread: report progress; stop when no job in the call still wants images."""

        previous: float | None = None  # the first step's time would include encoding the prompts

        def on_step(step: int, total: int) -> None:
            nonlocal previous
            now = time.monotonic()
            if previous is not None:
                metrics.STEP_DURATION.observe(now - previous)  # (prometheus_client is thread-safe)
            previous = self.last_progress_at = now
            if all(job.stop_requested or job.past_deadline(now) for job in jobs):
                raise StopBatch()
            loop.call_soon_threadsafe(_publish_step, jobs, step, total)

        return on_step

    async def _after_generation(self, job: Job, images: ImageOutcomes) -> None:
        if job.state.finished:
            return  # cancelled while running: already reported
        if job.handed_back:
            await self._journal_required().set_state(job.id, JobState.QUEUED)
            job.finish(JobState.QUEUED, error=EngineClosed(messages.RESTARTING))
            return
        outcomes = [images.get((job.id, index)) for index in range(job.image_count)]
        if job.past_deadline(time.monotonic()) or any(outcome is None for outcome in outcomes):
            limit = self._config.job_timeout_s
            await self._end(job, JobState.FAILED, GenerationTimeout(messages.TIMED_OUT.format(limit=limit)))
            return
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            log.error("job %s failed: %r", job.id, failure)
            error = (
                failure
                if isinstance(failure, OutOfMemory)
                else GenerationFailed(messages.GENERATION_FAILED.format(error=failure))
            )
            await self._end(job, JobState.FAILED, error)
            return
        pictures = [outcome for outcome in outcomes if isinstance(outcome, Image.Image)]
        task = asyncio.create_task(self._finish_job(job, pictures), name=f"imagine-post-{job.id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # ---- post-processing ---------------------------------------------------------------------------------

    async def _finish_job(self, job: Job, images: list[Image.Image]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            generated = await asyncio.gather(
                *(
                    loop.run_in_executor(self._post_threads, self._finisher.finish, image, self._context(job, index))
                    for index, image in enumerate(images)
                )
            )
        except Exception as exc:
            log.exception("post-processing job %s failed", job.id)
            await self._end(job, JobState.FAILED, GenerationFailed(messages.POSTPROCESS_FAILED.format(error=exc)))
            return
        if job.state.finished:
            return
        await self._journal_required().set_done(job.id, generated)
        timings = _timings(job, started, time.monotonic())
        metrics.IMAGES.inc(len(generated))
        job.finish(JobState.DONE, JobResult(job_id=job.id, images=tuple(generated), timings=timings))

    def _context(self, job: Job, index: int) -> ImageContext:
        return ImageContext(
            job_id=job.id,
            index=index,
            seed=job.seeds[index],
            prompt=job.request.prompt,
            model=self.model_name,
            from_image=job.request.image_prompt is not None,
        )

    def _journal_required(self) -> BatchJournal:
        if self._journal is None:
            raise EngineClosed(messages.NOT_STARTED)
        return self._journal

    def _runner_required(self) -> PipelineRunner:
        if self._runner is None:
            raise EngineClosed(messages.NOT_STARTED)
        return self._runner


def _publish_step(jobs: Sequence[Job], step: int, total: int) -> None:
    for job in jobs:
        if job.state is JobState.RUNNING and step > job.step:
            job.step, job.total_steps = step, total
            job.publish()


def _timings(job: Job, post_started: float, post_finished: float) -> Timings:
    started_at = job.started_at or post_started
    return Timings(
        queue_wait_s=started_at - job.enqueued_at,
        generate_s=post_started - started_at,
        postprocess_s=post_finished - post_started,
    )


def _image_task(job: Job, index: int) -> ImageTask:
    request = job.request
    return ImageTask(
        job_id=job.id,
        index=index,
        seed=job.seeds[index],
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        variation=request.variation,
        input_image=None if request.image_prompt is None else request.image_prompt.path,
        guidance_scale=request.guidance_scale,
    )


def postprocess_pool_size(config: EngineSettings) -> int:
    """`engine.postprocess_threads`, or for 0 (auto) every usable core but one (the pipeline thread's), from 2
    to 8: label, watermark and JPEG encode release the GIL for most of their time, and on a GPU machine one
    image's post-processing must keep up with the GPU making the next (bench/gpu.py reports the ratio)."""
    if config.postprocess_threads:
        return config.postprocess_threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(2, min(8, cores - 1))


def load_runner(settings: Settings) -> PipelineRunner:
    """Load the configured model (runs in the pipeline thread)."""
    from engine.worker.fast_paths import batch_buckets
    from engine.worker.model import load_model, model_name

    engine = settings.engine
    loaded = load_model(engine)
    paths = loaded.fast_paths
    return PipelineRunner(
        loaded.pipeline,
        model_name(engine.model),
        engine.guidance_scale,
        buckets=batch_buckets(engine.max_batch_images) if paths.pad_batches else (),
        pinned_transfer=paths.pinned_transfer,
    )
