"""The engine against the real tiny diffusers pipeline: images, seeds, fairness, batching, cancellation,
timeouts, out-of-memory splitting, failures, journaling and shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import (
    EngineClosed,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    JobCancelled,
    NotAllowed,
    QueueFull,
)
from engine.local import LocalJobQueue, QueueState
from engine.postprocess import PlainJpeg
from engine.requests import GenerationRequest, JobState, Requester, Variation
from engine.store import JobStore
from engine.worker.batches import load_runner
from engine.worker.runner import PipelineRunner
from tests.support import gated_runner, make_settings

SMALL = (64, 64)
ALICE = Requester(platform="test", user_id="alice")
BOB = Requester(platform="test", user_id="bob")
CAROL = Requester(platform="test", user_id="carol")


def small(prompt: str, requester: Requester = ALICE, **fields: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": prompt, "requester": requester, "size": SMALL, "steps": 2, **fields})


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, tiny_model_dir, max_batch_images=4)


async def started(engine: LocalJobQueue) -> LocalJobQueue:
    await engine.start()
    return engine


@pytest.mark.timeout(600)
async def test_four_1280_jpegs_with_their_own_seeds(tmp_path: Path, tiny_model_dir: Path) -> None:
    engine = await started(LocalJobQueue(make_settings(tmp_path, tiny_model_dir, steps=1)))
    try:
        job = await engine.submit(GenerationRequest(prompt="a lighthouse at dawn, oil painting", seed=41))
        result = await job.result()
    finally:
        await engine.shutdown()
    assert [image.seed for image in result.images] == [41, 42, 43, 44]
    for image in result.images:
        with Image.open(image.path) as decoded:
            assert decoded.format == "JPEG"
            assert decoded.size == (1280, 1280)


async def test_same_seed_same_image_and_one_image_rerenders_alone(settings) -> None:  # type: ignore[no-untyped-def]
    # a plain encode: each job's watermark differs on purpose, and this test is about the pixels generated
    engine = await started(LocalJobQueue(settings, postprocessor=PlainJpeg()))
    try:
        first = await (await engine.submit(small("red fox", seed=7))).result()
        again = await (await engine.submit(small("red fox", seed=7))).result()
        third_alone = await (await engine.submit(small("red fox", seed=9, num_images=1))).result()
        other = await (await engine.submit(small("red fox", seed=8000))).result()
    finally:
        await engine.shutdown()
    for a, b in zip(first.images, again.images, strict=True):
        assert np.array_equal(pixels(a.path), pixels(b.path))
    # image 2 of the first job had seed 9: rendering seed 9 alone reproduces it
    assert np.abs(pixels(first.images[2].path) - pixels(third_alone.images[0].path)).mean() < 1.0
    assert np.abs(pixels(first.images[0].path) - pixels(other.images[0].path)).mean() > 1.0


async def test_progress_events_from_queued_to_done(settings) -> None:  # type: ignore[no-untyped-def]
    engine = await started(LocalJobQueue(settings))
    try:
        job = await engine.submit(small("harbour at night", steps=3))
        events = [event async for event in job.events()]
    finally:
        await engine.shutdown()
    assert events[0].state is JobState.QUEUED and events[0].position == 1
    steps = [event.step for event in events if event.state is JobState.RUNNING]
    assert steps == sorted(steps) and steps[-1] == 3
    assert events[-1].state is JobState.DONE


async def test_round_robin_serves_a_light_user_before_a_heavy_users_backlog(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=4)
    runner, gate = gated_runner(settings)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    finished: list[str] = []
    try:
        jobs = {"a1": await engine.submit(small("one", ALICE))}
        await gate.wait_reached()
        for name, who in (("a2", ALICE), ("a3", ALICE), ("a4", ALICE), ("b1", BOB)):
            jobs[name] = await engine.submit(small(name, who))
        assert jobs["b1"].position == 1 and jobs["a4"].position == 4
        for name, job in jobs.items():
            job._result.add_done_callback(lambda _, name=name: finished.append(name))
        gate.release()
        await asyncio.gather(*(job.result() for job in jobs.values()))
    finally:
        await engine.shutdown()
    assert finished == ["a1", "b1", "a2", "a3", "a4"]


async def test_compatible_jobs_of_two_users_share_one_pipeline_call(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=8)
    runner, gate = gated_runner(settings)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner, postprocessor=PlainJpeg()))
    try:
        blocker = await engine.submit(small("blocker", CAROL, num_images=1))
        await gate.wait_reached()
        alice = await engine.submit(small("a red fox", ALICE, seed=100))
        bob = await engine.submit(small("a blue whale", BOB, seed=200))
        odd_shape = await engine.submit(GenerationRequest(prompt="tall", requester=CAROL, size=(64, 128), steps=2))
        gate.release()
        results = await asyncio.gather(blocker.result(), alice.result(), bob.result(), odd_shape.result())
        assert engine.pipeline_calls == 3  # blocker, alice+bob together, odd shape alone
        alone = await (await engine.submit(small("a blue whale", BOB, seed=200))).result()
    finally:
        await engine.shutdown()
    batched_bob = results[2]
    assert [image.seed for image in batched_bob.images] == [200, 201, 202, 203]
    for in_batch, by_itself in zip(batched_bob.images, alone.images, strict=True):
        assert np.abs(pixels(in_batch.path) - pixels(by_itself.path)).mean() < 1.0


async def test_jobs_with_their_own_guidance_share_a_batch_but_not_a_pipeline_call(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    """Style presets set a job's guidance; diffusers takes one per call, so a batch splits by guidance."""
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=8)
    runner, gate = gated_runner(settings)
    seen: list[tuple[float | None, int]] = []
    generate = runner.generate

    def recording(tasks, shape, on_step):  # type: ignore[no-untyped-def]
        seen.append((shape.guidance_scale, len(tasks)))
        return generate(tasks, shape, on_step)

    runner.generate = recording  # type: ignore[method-assign]
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner, postprocessor=PlainJpeg()))
    try:
        blocker = await engine.submit(small("blocker", CAROL, num_images=1))
        await gate.wait_reached()
        styled = await engine.submit(small("a red fox", ALICE, guidance_scale=7.5))
        plain = await engine.submit(small("a blue whale", BOB))
        gate.release()
        await asyncio.gather(blocker.result(), styled.result(), plain.result())
        record = await engine.lookup(styled.id)
    finally:
        await engine.shutdown()
    assert record is not None and record.request.guidance_scale == 7.5  # journaled with the job
    assert sorted(seen[1:], key=str) == sorted([(7.5, 4), (None, 4)], key=str)


async def test_cancel_a_queued_job_removes_it(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    try:
        first = await engine.submit(small("first"))
        await gate.wait_reached()
        second = await engine.submit(small("second", BOB))
        with pytest.raises(NotAllowed):
            await engine.cancel(second.id, by=ALICE)
        assert await engine.cancel(second.id, by=BOB)
        gate.release()
        await first.result()
        with pytest.raises(JobCancelled):
            await second.result()
        assert engine.pipeline_calls == 1
        assert (await engine.lookup(second.id)).state is JobState.CANCELLED  # type: ignore[union-attr]
        assert not await engine.cancel(second.id)
    finally:
        await engine.shutdown()


async def test_cancel_a_running_job_stops_before_decoding(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings, 2)
    decodes = count_vae_decodes(runner)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    try:
        job = await engine.submit(small("slow one", steps=4))
        await gate.wait_reached()  # step 1 done, inside step 2
        assert await engine.cancel(job.id, by=ALICE)
        gate.release()
        with pytest.raises(JobCancelled):
            await job.result()
        after = await (await engine.submit(small("next one"))).result()  # the engine carries on
    finally:
        await engine.shutdown()
    assert gate.calls == 2 + 2  # the cancelled call stopped after step 2; the next job ran its 2 steps
    assert decodes == [1]  # only the next job's batch was decoded
    assert len(after.images) == 4


async def test_cancelled_job_in_a_batch_does_not_spoil_the_other(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=8)
    runner, gate = gated_runner(settings, 1, 3)  # hold the blocker's first step, then the batch's first step
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    try:
        blocker = await engine.submit(small("blocker", ALICE, num_images=1))
        await gate.wait_reached(1)
        bob = await engine.submit(small("bob's", BOB))
        carol = await engine.submit(small("carol's", CAROL))
        gate.release(1)
        await blocker.result()
        await gate.wait_reached(3)  # bob and carol share this call
        assert await engine.cancel(bob.id, by=BOB)
        gate.release(3)
        result = await carol.result()
        with pytest.raises(JobCancelled):
            await bob.result()
    finally:
        await engine.shutdown()
    assert len(result.images) == 4
    assert engine.pipeline_calls == 2


def count_vae_decodes(runner: PipelineRunner) -> list[int]:
    """Record the batch size of every VAE decode the pipeline makes."""
    sizes: list[int] = []
    vae = runner.pipe.vae
    original = vae.decode

    def decode(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        sizes.append(1)
        return original(latents, *args, **kwargs)

    vae.decode = decode
    return sizes


async def test_a_job_past_its_timeout_fails_with_timeout(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings, 2)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    try:
        job = await engine.submit(small("takes too long", steps=4))
        await gate.wait_reached()
        job.deadline = time.monotonic()  # as if job_timeout_s had run out during step 2
        gate.release()
        with pytest.raises(GenerationTimeout):
            await job.result()
        assert (await engine.lookup(job.id)).error_kind == "timeout"  # type: ignore[union-attr]
    finally:
        await engine.shutdown()
    assert gate.calls == 2


class PipelineBoundary:
    """Wraps the real pipeline object to inject failures where the engine calls it."""

    def __init__(self, pipe: Any, fail: Any) -> None:
        self._pipe = pipe
        self._fail = fail
        self.batch_sizes: list[int] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.batch_sizes.append(len(kwargs["prompt"]))
        error = self._fail(kwargs)
        if error is not None:
            raise error
        return self._pipe(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


async def test_out_of_memory_splits_the_batch_and_retries_the_halves(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=8)

    def oom_above_two(kwargs: dict[str, Any]) -> Exception | None:
        if len(kwargs["prompt"]) > 2:
            return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return None

    boundary: list[PipelineBoundary] = []

    def factory() -> PipelineRunner:
        runner = load_runner(settings)
        boundary.append(PipelineBoundary(runner.pipe, oom_above_two))
        runner.pipe = boundary[0]
        return runner

    engine = await started(LocalJobQueue(settings, runner_factory=factory))
    try:
        result = await (await engine.submit(small("big batch", seed=5))).result()
    finally:
        await engine.shutdown()
    assert boundary[0].batch_sizes == [4, 2, 2]
    assert [image.seed for image in result.images] == [5, 6, 7, 8]


async def test_a_failing_job_fails_alone_and_the_engine_carries_on(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=8)

    def poison(kwargs: dict[str, Any]) -> Exception | None:
        return ValueError("tensor shapes do not match") if any("poison" in p for p in kwargs["prompt"]) else None

    def factory() -> PipelineRunner:
        runner = load_runner(settings)
        runner.pipe = PipelineBoundary(runner.pipe, poison)
        return runner

    engine = await started(LocalJobQueue(settings, runner_factory=factory))
    try:
        bad, good = await engine.submit(small("poison apple", ALICE)), await engine.submit(small("apple", BOB))
        good_result = await good.result()
        with pytest.raises(GenerationFailed):
            await bad.result()
        assert (await engine.lookup(bad.id)).error_kind == "generation_failed"  # type: ignore[union-attr]
        assert len(good_result.images) == 4
    finally:
        await engine.shutdown()


async def test_invalid_requests_are_refused_with_the_bad_value(settings) -> None:  # type: ignore[no-untyped-def]
    engine = await started(LocalJobQueue(settings))
    try:
        cases = {
            "prompt must not be empty": GenerationRequest(prompt=" \u200b\n "),
            "too long": GenerationRequest(prompt="x" * (settings.engine.max_prompt_chars + 1)),
            "steps must be between 1 and 50, got 51": small("x", steps=51),
            "width must be a multiple of 8 between 64 and 2048, got 1283": small("x", size=(1283, 64)),
            "aspect must be between 1:4 and 4:1": GenerationRequest(prompt="x", aspect="50:1"),
            "aspect sides must be greater than 0": GenerationRequest(prompt="x", aspect="0:1"),
            "seed must be between": GenerationRequest(prompt="x", seed=-1),
            "variation strength": small("x", variation=Variation(parent_seed=1, strength=2.0)),
        }
        for message, request in cases.items():
            with pytest.raises(InvalidRequest, match=message):
                await engine.submit(request)
        assert engine.pipeline_calls == 0
        assert await engine.undelivered() == []
    finally:
        await engine.shutdown()


async def test_queue_full_is_refused(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, queue_size=1)
    runner, gate = gated_runner(settings)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    try:
        running = await engine.submit(small("running"))
        await gate.wait_reached()
        waiting = await engine.submit(small("waiting"))
        with pytest.raises(QueueFull):
            await engine.submit(small("one too many"))
        gate.release()
        await asyncio.gather(running.result(), waiting.result())
    finally:
        await engine.shutdown()


async def test_shutdown_drains_the_queue_then_refuses_work(settings) -> None:  # type: ignore[no-untyped-def]
    engine = await started(LocalJobQueue(settings))
    jobs = [await engine.submit(small(f"job {n}", who)) for n, who in enumerate((ALICE, BOB, ALICE))]
    await engine.shutdown(drain=True)
    assert engine.state is QueueState.STOPPED
    assert all(job.state is JobState.DONE for job in jobs)
    with pytest.raises(EngineClosed):
        await engine.submit(small("late"))


async def test_handed_back_jobs_resume_after_restart_and_results_wait_for_delivery(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings, 1)
    first = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    running = await first.submit(small("running at shutdown", seed=11))
    await gate.wait_reached()
    queued = await first.submit(small("queued at shutdown", BOB, seed=22))
    stopping = asyncio.create_task(first.shutdown(drain=False))
    gate.release()
    await stopping
    with pytest.raises(EngineClosed):
        await queued.result()
    store = await JobStore.open(settings.store.url)
    assert {record.id for record in await store.in_states([JobState.QUEUED])} == {running.id, queued.id}
    await store.close()

    second = await started(LocalJobQueue(settings))
    try:
        resumed = {job.id: job for job in await second.active()}
        assert set(resumed) == {running.id, queued.id}
        results = {job_id: await job.result() for job_id, job in resumed.items()}
        assert [image.seed for image in results[queued.id].images] == [22, 23, 24, 25]
        undelivered = await second.undelivered("test")
        assert {record.id for record in undelivered} == {running.id, queued.id}
        await second.mark_delivered(running.id)
        assert [record.id for record in await second.undelivered("test")] == [queued.id]
    finally:
        await second.shutdown()


async def test_variations_stay_close_to_their_parent(settings) -> None:  # type: ignore[no-untyped-def]
    engine = await started(LocalJobQueue(settings, postprocessor=PlainJpeg()))
    try:
        parent = await (await engine.submit(small("a castle", seed=300, num_images=1))).result()
        variation = await (
            await engine.submit(
                small("a castle", seed=9000, num_images=1, variation=Variation(parent_seed=300, strength=0.1))
            )
        ).result()
        unrelated = await (await engine.submit(small("a castle", seed=9000, num_images=1))).result()
    finally:
        await engine.shutdown()
    near = np.abs(pixels(parent.images[0].path) - pixels(variation.images[0].path)).mean()
    far = np.abs(pixels(parent.images[0].path) - pixels(unrelated.images[0].path)).mean()
    assert near < far


async def test_a_second_shutdown_without_drain_hands_back_a_draining_one(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings)
    engine = await started(LocalJobQueue(settings, runner_factory=lambda: runner))
    running = await engine.submit(small("running"))
    await gate.wait_reached()
    queued = await engine.submit(small("queued", BOB))
    draining = asyncio.create_task(engine.shutdown(drain=True))
    await asyncio.sleep(0)  # one loop turn: the draining shutdown has begun
    assert engine.state is QueueState.STOPPING
    await engine.shutdown(drain=False)  # e.g. a second SIGTERM: stop at once instead
    gate.release()
    await draining
    assert engine.state is QueueState.STOPPED
    store = await JobStore.open(settings.store.url)
    assert {record.id for record in await store.in_states([JobState.QUEUED])} == {running.id, queued.id}
    await store.close()
