"""Scale-out with GPU workers as separate processes (`imagine worker`), on the real Redis and PostgreSQL: a worker
SIGKILLed in the middle of a batch loses nothing; its jobs finish on the other worker and each ends once. Each
worker answers /readyz and /metrics of its own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from engine.redis_streams import WORKERS_GROUP, RedisJob, RedisJobQueue
from engine.requests import GenerationRequest, JobState, Requester
from tests.redis_support import REDIS_URL, eventually, frontend, redis_prefix, scale_out_settings  # noqa: F401
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)
from tests.support import ROOT, serve_environment
from tests.test_redis_queue import events_in, finished, leftovers


async def start_worker(env: dict[str, str], name: str, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", "worker", "--name", name, cwd=ROOT, env=env, stdout=log, stderr=log
        )


async def logged(path: Path, text: str) -> None:
    for _ in range(6000):
        if text in await asyncio.to_thread(_read, path):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path.name} never said {text!r}")


async def probe(log_path: Path, path: str) -> tuple[int, str]:
    """GET a path of a worker's web server (its log names the address)."""
    found = re.search(r"web server on (http://127\.0\.0\.1:\d+)", await asyncio.to_thread(_read, log_path))
    assert found, f"{log_path.name} names no web server"
    async with aiohttp.ClientSession() as http, http.get(found.group(1) + path) as response:
        return response.status, await response.text()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def test_a_worker_killed_mid_batch_loses_nothing_and_each_job_ends_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    env = serve_environment(
        tmp_path,
        tiny_model_dir,
        ENGINE__QUEUE="redis",
        ENGINE__REDIS_URL=REDIS_URL,
        ENGINE__REDIS_PREFIX=redis_prefix,
        ENGINE__HEARTBEAT_S="0.2",
        ENGINE__RECLAIM_AFTER_HEARTBEATS="4",
        ENGINE__MAX_BATCH_IMAGES="8",
        STORE__URL=postgres_url,
    )
    steps = 50  # a job then takes a second or more: the kill lands in its middle, milliseconds after a step
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    workers = {name: await start_worker(env, name, tmp_path / f"{name}.log") for name in ("w1", "w2")}
    stream = f"{redis_prefix}:jobs:64x64x{steps}"
    try:
        queue = RedisJobQueue(frontend(settings, "f1"))
        await queue.start()
        try:
            warmup = await queue.submit(GenerationRequest("warm-up", size=(64, 64), steps=steps, num_images=1))
            await finished(warmup)
            for name in workers:  # both have loaded the model and are reading
                await logged(tmp_path / f"{name}.log", "is taking jobs")
            for name in workers:  # and each says so on its own /readyz
                status, body = await probe(tmp_path / f"{name}.log", "/readyz")
                assert status == 200 and json.loads(body)["checks"]["heartbeat"] is True, body
            users = [Requester(platform="test", user_id=f"user{i}") for i in range(4)]
            jobs = [
                await queue.submit(GenerationRequest(f"job {i}", user, size=(64, 64), steps=steps))
                for i, user in enumerate(users)
            ]
            first_step: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def watch(job: RedisJob) -> None:
                async for event in job.events():
                    if event.step >= 1 and not first_step.done():
                        first_step.set_result(job.id)

            watchers = [asyncio.create_task(watch(job)) for job in jobs]
            stepping = await asyncio.wait_for(first_step, 120)  # a worker is in the middle of that job's batch
            entry_id = await client.hget(f"{redis_prefix}:job:{stepping}", "entry")  # type: ignore[misc]
            pending = await client.xpending_range(stream, WORKERS_GROUP, "-", "+", 100)
            victim = next(entry["consumer"] for entry in pending if entry["message_id"] == entry_id)
            held_by_victim = [entry["message_id"] for entry in pending if entry["consumer"] == victim]
            os.kill(workers[victim].pid, signal.SIGKILL)  # mid-batch: its jobs are still pending under its name
            await workers[victim].wait()
            outcomes = [await finished(job) for job in jobs]
            for watcher in watchers:
                await watcher
        finally:
            await queue.shutdown()
        survivor = next(name for name in workers if name != victim)
        left_pending = await client.xpending(stream, WORKERS_GROUP)
        status, metrics = await probe(tmp_path / f"{survivor}.log", "/metrics")
    finally:
        for process in workers.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        await client.aclose()

    assert held_by_victim, "the killed worker held no job"
    assert [outcome.state for outcome in outcomes] == [JobState.DONE] * 4
    ended = [event for event in await events_in(redis_prefix, "f1") if event.state.finished]
    # Every job's end reached its frontend, never as anything but done. (Events are at least once: a worker
    # killed between journaling a job's end and acknowledging it has it announced again by the one that takes
    # the entry over; delivering to chat once is the database's delivery claims' part.)
    assert {event.job_id for event in ended} == {warmup.id, *(job.id for job in jobs)}
    assert {event.state for event in ended} == {JobState.DONE}
    assert left_pending["pending"] == 0
    log = await asyncio.to_thread(_read, tmp_path / f"{survivor}.log")
    assert "reclaimed from a silent worker" in log
    assert workers[survivor].returncode == 0  # SIGTERM: it finished what it held and stopped cleanly
    assert await leftovers(redis_prefix) == []
    assert status == 200 and 'imagine_jobs_total{outcome="done"}' in metrics  # the worker's own metrics
