"""The scale-out queue on the real Redis and the real PostgreSQL: frontends (`RedisJobQueue`) and GPU workers
(`RemoteWorker`, the tiny diffusers pipeline) in this process, each with its own Redis connection, so that the
ordering-dependent cases (a worker holding a job, cancelling it, reclaiming it) can be held still with a gate in the
pipeline instead of sleeps. tests/test_redis_processes.py runs them as separate processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from config.settings import Settings
from engine.errors import NotAllowed, QueueFull, QueueUnavailable
from engine.redis_streams import WORKERS_GROUP, RedisJob, RedisJobQueue, StreamQueue, event_from_json
from engine.requests import GeneratedImage, GenerationRequest, JobState, ProgressEvent, Requester
from engine.store import JobStore
from engine.worker.batches import load_runner
from engine.worker.remote import RemoteWorker
from engine.worker.runner import PipelineRunner
from tests.redis_support import (  # noqa: F401 (fixtures)
    REDIS_URL,
    PrivateRedis,
    eventually,
    frontend,
    private_redis,
    redis_prefix,
    scale_out_settings,
)
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)
from tests.support import UnetGate, gated_runner

ALICE = Requester(platform="test", user_id="alice")
BOB = Requester(platform="test", user_id="bob")
CAROL = Requester(platform="test", user_id="carol")


def small(prompt: str, requester: Requester = ALICE, **fields: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, requester=requester, size=(64, 64), steps=2, **fields)


@asynccontextmanager
async def running_worker(
    settings: Settings, runner_factory: Callable[[], PipelineRunner] | None = None, gate: UnetGate | None = None
) -> AsyncIterator[RemoteWorker]:
    """A worker taking jobs until the block ends (then it finishes what it holds; a failed test's gate opens)."""
    worker = RemoteWorker(settings, runner_factory=runner_factory)
    await worker.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        if gate is not None:
            gate.release()
        stop.set()
        await asyncio.wait_for(task, 120)
        await worker.close()


@asynccontextmanager
async def started_frontend(settings: Settings, frontend_id: str) -> AsyncIterator[RedisJobQueue]:
    queue = RedisJobQueue(frontend(settings, frontend_id))
    await queue.start()
    try:
        yield queue
    finally:
        await queue.shutdown()


async def finished(job: RedisJob) -> ProgressEvent:
    return await asyncio.wait_for(job.wait_finished(), 120)


def _all_files(images: tuple[GeneratedImage, ...]) -> bool:
    return all(Path(image.path).is_file() for image in images)


def started_ids(worker: RemoteWorker) -> list[str]:
    return [job_id for _, job_id in worker.started]


async def events_in(prefix: str, frontend_id: str, url: str = REDIS_URL) -> list[ProgressEvent]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        entries = await client.xrange(f"{prefix}:events:{frontend_id}")
    finally:
        await client.aclose()
    return [event_from_json(fields["e"]) for _, fields in entries]


async def leftovers(prefix: str, url: str = REDIS_URL) -> list[str]:
    """Keys of queued or running jobs, waiting lanes, slot counts and stream entries left behind."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        kinds = (f"{prefix}:job:", f"{prefix}:lane:", f"{prefix}:inflight", f"{prefix}:queued")
        left = [key for key in keys if key.startswith(kinds)]
        for stream in await client.smembers(f"{prefix}:streams"):  # type: ignore[misc]
            if await client.xlen(stream):
                left.append(stream)
    finally:
        await client.aclose()
    return left


async def test_jobs_spread_over_workers_a_slow_job_outlives_heartbeats_and_runs_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    runner, gate = gated_runner(settings, 1)
    try:
        async with (
            started_frontend(settings, "f1") as f1,
            started_frontend(settings, "f2") as f2,
            running_worker(settings, lambda: runner, gate) as slow,
        ):
            a = await f1.submit(small("a lighthouse", ALICE))
            await gate.wait_reached()  # the slow worker holds job a inside its pipeline
            async with running_worker(settings) as other:
                b = await f2.submit(small("a red fox", BOB))
                done_b = await finished(b)  # the other worker takes it while the first one is busy
                beats, rounds = slow.heartbeats, other.janitor_rounds
                reclaim_beats = settings.engine.reclaim_after_heartbeats
                await eventually(lambda: slow.heartbeats >= beats + 2 * reclaim_beats, what="six heartbeats")
                await eventually(lambda: other.janitor_rounds >= rounds + 2, what="the janitor looking again")
                gate.release()
                done_a = await finished(a)
                assert started_ids(other) == [b.id]  # a was never reclaimed while its worker lived
            assert started_ids(slow) == [a.id]
            assert slow.pipeline_calls == 1
    finally:
        gate.release()

    assert done_a.state is JobState.DONE and done_b.state is JobState.DONE
    assert await asyncio.to_thread(_all_files, done_a.images + done_b.images)
    store = await JobStore.open(postgres_url)  # the shared journal has both results
    try:
        for event in (done_a, done_b):
            record = await store.get(event.job_id)
            assert record is not None and record.state is JobState.DONE
            assert [image.path for image in record.images] == [image.path for image in event.images]
    finally:
        await store.close()
    f1_events, f2_events = await events_in(redis_prefix, "f1"), await events_in(redis_prefix, "f2")
    assert {event.job_id for event in f1_events} == {a.id}  # each frontend hears only of its own jobs
    assert {event.job_id for event in f2_events} == {b.id}
    assert [event.state for event in f1_events if event.state.finished] == [JobState.DONE]
    assert [event.state for event in f2_events if event.state.finished] == [JobState.DONE]
    assert await leftovers(redis_prefix) == []


async def test_cancel_reaches_waiting_queued_and_running_jobs(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    runner, gate = gated_runner(settings, 1)
    try:
        async with started_frontend(settings, "f1") as f1, running_worker(settings, lambda: runner, gate) as worker:
            running = await f1.submit(small("running", ALICE))
            await gate.wait_reached()
            waiting = await f1.submit(small("alice's second, waiting for her slot", ALICE))
            queued = await f1.submit(small("bob's, in the stream", BOB))
            assert waiting.snapshot().position == 1 and queued.snapshot().position == 1  # first of theirs
            with pytest.raises(NotAllowed):
                await f1.cancel(running.id, by=BOB)
            assert await f1.cancel(waiting.id, by=ALICE)
            assert await f1.cancel(queued.id)
            assert (await finished(waiting)).state is JobState.CANCELLED  # at once: no worker involved
            assert (await finished(queued)).state is JobState.CANCELLED
            assert await f1.cancel(running.id, by=ALICE)
            cancelled = await finished(running)  # the worker's heartbeat picks the request up and stops it
            gate.release()
            after = await finished(await f1.submit(small("after", ALICE)))
            assert not await f1.cancel(running.id)
            assert started_ids(worker) == [running.id, after.job_id]
            records = [await f1.lookup(job.id) for job in (running, waiting, queued)]
    finally:
        gate.release()
    assert cancelled.state is JobState.CANCELLED and cancelled.error_kind == "cancelled"
    assert after.state is JobState.DONE
    assert [record.state if record else None for record in records] == [JobState.CANCELLED] * 3
    assert await leftovers(redis_prefix) == []


async def test_a_job_that_keeps_killing_workers_is_dead_lettered_and_its_requester_told(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix, max_deliveries=3)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with started_frontend(settings, "f1") as f1:
            poison = await f1.submit(small("poison", ALICE))
            stream = f"{redis_prefix}:jobs:64x64x2"
            # Three workers took it and died on it: what they leave behind in Redis is its delivery count.
            read = await client.xreadgroup(WORKERS_GROUP, "dead-worker-1", {stream: ">"}, count=1)
            entry_id = read[0][1][0][0]
            for dead in ("dead-worker-2", "dead-worker-3"):
                await client.xclaim(stream, WORKERS_GROUP, dead, 0, [entry_id])
            async with running_worker(settings) as worker:
                failed = await finished(poison)
                healthy = await finished(await f1.submit(small("healthy", BOB)))
            dead_letters = await client.xrange(f"{redis_prefix}:dead")
            record = await f1.lookup(poison.id)
    finally:
        await client.aclose()
    assert failed.state is JobState.FAILED and failed.error_kind == "dead_letter"
    assert "3 workers" in (failed.error or "")
    assert [fields["job"] for _, fields in dead_letters] == [poison.id]
    assert dead_letters[0][1]["deliveries"] == "4" and dead_letters[0][1]["owner"] == "f1"
    assert record is not None and record.state is JobState.FAILED and record.error_kind == "dead_letter"
    assert started_ids(worker) == [healthy.job_id] and healthy.state is JobState.DONE
    assert await leftovers(redis_prefix) == []


async def test_fair_with_two_workers_one_job_of_b_starts_within_the_next_two_after_ten_of_a(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix, jobs_per_user=2)
    async with (
        started_frontend(settings, "f1") as f1,
        running_worker(settings) as w1,
        running_worker(settings) as w2,
    ):
        a_jobs = [await f1.submit(small(f"a {i}", ALICE, num_images=2)) for i in range(10)]
        await eventually(lambda: len(w1.started) + len(w2.started) >= 2, what="A's first jobs starting")
        submitted_at = asyncio.get_running_loop().time()
        b = await f1.submit(small("b", BOB, num_images=2))
        outcomes = [await finished(job) for job in [*a_jobs, b]]
    assert [outcome.state for outcome in outcomes] == [JobState.DONE] * 11
    starts = sorted(w1.started + w2.started)
    assert sorted(job_id for _, job_id in starts) == sorted(job.id for job in [*a_jobs, b])  # each started once
    after_b = [job_id for started, job_id in starts if started >= submitted_at]
    assert b.id in after_b[:2], f"B started as job {after_b.index(b.id) + 1} after it was submitted"
    assert w1.started and w2.started  # both workers took part
    assert await leftovers(redis_prefix) == []


async def test_queue_positions_move_up_as_the_jobs_ahead_start(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    """No event reports other jobs starting on a worker, so the frontend looks up the places in line of its
    queued jobs every heartbeat: a job in the stream and one in its user's lane both move up."""
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix, max_batch_images=4)
    runner, gate = gated_runner(settings, 1, 3)  # each job: 2 steps, one UNet call each: a holds at 1, b at 3
    async with started_frontend(settings, "f1") as f1, running_worker(settings, lambda: runner, gate):
        a = await f1.submit(small("a", ALICE))
        await gate.wait_reached(1)
        b, c = await f1.submit(small("b", BOB)), await f1.submit(small("c", CAROL))
        d = await f1.submit(small("d", ALICE))  # Alice already has a job running: d waits in her lane
        assert [job.snapshot().position for job in (b, c, d)] == [1, 2, 3]
        seen: dict[str, list[int]] = {job.id: [] for job in (c, d)}

        async def watch(job: RedisJob) -> None:
            async for event in job.events():
                if event.position and event.position not in seen[job.id][-1:]:
                    seen[job.id].append(event.position)

        watchers = [asyncio.create_task(watch(job)) for job in (c, d)]
        gate.release(1)
        await gate.wait_reached(3)  # a is done, b runs; c is next, and d has joined the stream behind it
        await eventually(lambda: c.snapshot().position == 1 and d.snapshot().position == 2, what="positions")
        gate.release(3)
        outcomes = [await finished(job) for job in (a, b, c, d)]
        await asyncio.gather(*watchers)
    assert [outcome.state for outcome in outcomes] == [JobState.DONE] * 4
    assert seen == {c.id: [2, 1], d.id: [3, 2, 1]} or seen == {c.id: [2, 1], d.id: [3, 2]}


async def test_a_worker_told_to_hurry_hands_its_running_job_back_for_another_worker(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    """`imagine worker`'s second signal: the job it runs stops at its next step and goes back to its stream; the
    worker's run() returns without finishing it, and another worker runs it to the end."""
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    runner, gate = gated_runner(settings, 1)
    async with started_frontend(settings, "f1") as f1:
        hurried = RemoteWorker(settings, runner_factory=lambda: runner)
        await hurried.start()
        stop = asyncio.Event()
        running = asyncio.create_task(hurried.run(stop))
        try:
            job = await f1.submit(small("a lighthouse", ALICE))
            await gate.wait_reached()
            stop.set()
            hurried.hand_back()
            gate.release()
            await asyncio.wait_for(running, 120)
        finally:
            gate.release()
            stop.set()
            await asyncio.gather(running, return_exceptions=True)
            await hurried.close()
        assert not job.state.finished
        async with running_worker(settings) as other:
            outcome = await finished(job)
    assert outcome.state is JobState.DONE
    assert started_ids(hurried) == [job.id] and started_ids(other) == [job.id]
    assert await leftovers(redis_prefix) == []


async def test_a_restarted_frontend_follows_its_job_and_hears_the_end_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    runner, gate = gated_runner(settings, 1)
    try:
        async with running_worker(settings, lambda: runner, gate):
            async with started_frontend(settings, "f1") as before, started_frontend(settings, "f2") as neighbour:
                job = await before.submit(small("across a restart", ALICE))
                other = await neighbour.submit(small("someone else's", BOB))
                await gate.wait_reached()
                followed_before = asyncio.create_task(finished(job))
            handed_back = await followed_before  # stopping ends its followers at once, the job unfinished
            assert not handed_back.state.finished
            async with started_frontend(settings, "f1") as after:  # the same frontend, restarted
                resumed = await after.active()
                assert [handle.id for handle in resumed] == [job.id]  # its own job only, not f2's
                seen: list[ProgressEvent] = []

                async def follow() -> None:
                    async for event in resumed[0].events():
                        seen.append(event)

                following = asyncio.create_task(follow())
                gate.release()
                await asyncio.wait_for(following, 120)
                await journaled_as(after, other.id, JobState.DONE)
    finally:
        gate.release()
    assert [event.state for event in seen if event.state.finished] == [JobState.DONE]
    assert seen[-1].images and await asyncio.to_thread(_all_files, seen[-1].images)
    done_events = [e for e in await events_in(redis_prefix, "f1") if e.state is JobState.DONE]
    assert [event.job_id for event in done_events] == [job.id]


async def test_redis_down_is_a_clear_error_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, "imagine", redis_url=private_redis.url)
    runner, gate = gated_runner(settings, 1)
    try:
        async with started_frontend(settings, "f1") as f1, running_worker(settings, lambda: runner, gate) as worker:
            acknowledged = await f1.submit(small("acknowledged before the outage", ALICE))
            waiting = await f1.submit(small("queued before the outage", BOB))
            await gate.wait_reached()
            private_redis.kill()
            with pytest.raises(QueueUnavailable, match=f"Redis at redis://127.0.0.1:{private_redis.port}/0"):
                await f1.submit(small("during the outage", ALICE))
            refused = [record for record in await _failed(postgres_url) if record.request.prompt.startswith("during")]
            gate.release()  # the job finishes while Redis is down: its result is journaled, its event waits
            await journaled_as(f1, acknowledged.id, JobState.DONE)
            private_redis.start()
            done = [await finished(acknowledged), await finished(waiting)]
            later = await finished(await f1.submit(small("after the outage", ALICE)))
    finally:
        gate.release()
    assert [event.state for event in done] == [JobState.DONE, JobState.DONE]
    assert later.state is JobState.DONE
    assert [record.error_kind for record in refused] == ["queue_unavailable"]
    assert sorted(started_ids(worker)) == sorted([acknowledged.id, waiting.id, later.job_id])


async def journaled_as(queue: RedisJobQueue, job_id: str, state: JobState) -> None:
    for _ in range(6000):  # the journal is the database: it answers while Redis is away
        record = await queue.lookup(job_id)
        if record is not None and record.state is state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {state.value}")


async def _failed(store_url: str) -> list[Any]:
    store = await JobStore.open(store_url)
    try:
        return await store.in_states([JobState.FAILED])
    finally:
        await store.close()


async def test_a_worker_killed_between_journaling_and_acknowledging_leaves_nothing_unheard(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    image = GeneratedImage(index=0, seed=1, path=str(tmp_path / "rendered.jpg"), width=64, height=64)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with started_frontend(settings, "f1") as f1:
            job = await f1.submit(small("rendered, never acknowledged", ALICE, num_images=1))
            # What the killed worker left: the entry pending under its name, the result in the journal.
            await client.xreadgroup(WORKERS_GROUP, "killed-worker", {f"{redis_prefix}:jobs:64x64x2": ">"}, count=1)
            store = await JobStore.open(postgres_url)
            try:
                await store.set_done(job.id, [image])
            finally:
                await store.close()
            async with running_worker(settings) as worker:
                ended = await finished(job)
    finally:
        await client.aclose()
    assert ended.state is JobState.DONE and [i.path for i in ended.images] == [image.path]
    assert worker.started == []  # announced from the journal, not rendered again
    assert await leftovers(redis_prefix) == []


async def test_the_queue_size_holds_across_frontends(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix, queue_size=3)
    async with started_frontend(settings, "f1") as f1, started_frontend(settings, "f2") as f2:
        first = await f1.submit(small("one", ALICE))
        second = await f2.submit(small("two", ALICE))  # waits in alice's lane: counted all the same
        third = await f2.submit(small("three", BOB))
        with pytest.raises(QueueFull, match="3 jobs"):
            await f1.submit(small("four", BOB))
        assert await f1.cancel(first.id)
        fourth = await f1.submit(small("four, again", BOB))
        refused = [record for record in await _failed(postgres_url) if record.request.prompt == "four"]
        for job in (second, third):  # cancelled on the frontend that does not follow them: their own hears it
            assert await f1.cancel(job.id)
            assert (await finished(job)).state is JobState.CANCELLED
        assert await f2.cancel(fourth.id)
        assert (await finished(fourth)).state is JobState.CANCELLED
    assert [record.error_kind for record in refused] == ["queue_full"]
    assert await leftovers(redis_prefix) == []


async def test_only_consumers_holding_nothing_are_forgotten(redis_prefix: str) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    settings = scale_out_settings(Path("unused"), Path("unused"), "sqlite:///unused.db", redis_prefix)
    streams = StreamQueue(client, settings.engine)
    stream = streams.stream("64x64x2")
    try:
        await streams.ensure_group(stream)
        await client.xadd(stream, {"job": "j1"})
        await client.xreadgroup(WORKERS_GROUP, "gone-holding-one", {stream: ">"}, count=1)
        await client.xgroup_createconsumer(stream, WORKERS_GROUP, "gone-empty")
        await client.xgroup_createconsumer(stream, WORKERS_GROUP, "me")
        removed = await streams.prune_consumers(stream, 0, keep="me")
        left = {consumer["name"] for consumer in await client.xinfo_consumers(stream, WORKERS_GROUP)}
    finally:
        await client.aclose()
    assert removed == ["gone-empty"]
    assert left == {"gone-holding-one", "me"}  # its pending entry stays claimable


async def test_a_worker_whose_model_loads_slower_than_the_reclaim_period_is_ready_once_started(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    """/readyz's heartbeat check counts from the end of start(), not from construction: a real model takes longer
    to load than the reclaim period, and the worker holds nothing yet."""
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix, heartbeat_s=0.5)

    def slow_load() -> PipelineRunner:
        time.sleep(worker.reclaim_idle_s + 0.5)  # in the pipeline thread, as a real load would be
        return load_runner(settings)

    worker = RemoteWorker(settings, runner_factory=slow_load)
    try:
        await worker.start()
        checks = await worker.readiness()
    finally:
        await worker.close()
    assert checks == {"model_loaded": True, "redis": True, "heartbeat": True, "worker_progress": True}
