"""Scale-out queue benchmark (engine/redis_streams.py, engine/worker/remote.py) on the local Redis. (Not named
queue.py: a script's folder comes first on sys.path, and a bench/queue.py hid the standard library's `queue` from
every other benchmark.)

    .venv/bin/python bench/job_queue.py                      # 20,000 jobs, 2,000 events, a reclaim with 2 s heartbeats
    .venv/bin/python bench/job_queue.py --jobs 5000 --heartbeat 0.5    # quicker

- redis_jobs_per_s: jobs through the queue layer with a no-op pipeline: producers in this process (a frontend)
  enqueue (the ENQUEUE script), two consumers in a second process (a worker machine; their own connections) read
  with XREADGROUP COUNT 2, start (START, pipelined per read) and acknowledge (COMPLETE, which also frees the
  user's slot) each job; 200 users, so the per-user lanes are in play. The database journal
  is left out: both modes write the same rows, and it is measured by bench/storage.py.
- redis_vs_memory: that rate over the in-process queue's (FairQueue push + take_batch), same jobs, same run.
- reclaim_s: two `imagine worker` processes (tiny model); one is SIGKILLed while running a job, and the time
  until the other starts that job (its "running" event reaching the frontend) is measured, also in heartbeats.
- events_p99_ms: a worker-side XADD to the frontend's events stream → the event at its handle in the frontend
  (RedisJobQueue's reader), paced at 500 events/s.
- Result images (why the default is the shared folder, engine.output_dir): the bytes of one job (four 1280²
  JPEGs of a photo-like image at the configured quality) and the time to write and read them back in a folder
  versus SET with a TTL and GET in Redis.
Prints a table, then one JSON line. The machine is shared: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402

from bench.image_samples import sample_image  # noqa: E402
from config.settings import Settings, load_settings  # noqa: E402
from engine.redis_streams import (  # noqa: E402
    RedisJob,
    RedisJobQueue,
    StreamQueue,
    connect,
)
from engine.requests import GenerationRequest, JobState, ProgressEvent, Requester  # noqa: E402
from engine.scheduler import FairQueue  # noqa: E402
from engine.store import JobRecord  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("IMAGINE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("IMAGINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def settings_for(prefix: str, **engine: object) -> Settings:
    base = load_settings(env={})
    return replace(base, engine=replace(base.engine, queue="redis", redis_url=REDIS_URL, redis_prefix=prefix, **engine))


def record(index: int, users: int) -> JobRecord:
    request = GenerationRequest(prompt=f"job {index}", requester=Requester("bench", f"user{index % users}"))
    return JobRecord(f"job{index:08d}", request, (1, 2, 3, 4), 64, 64, 2, JobState.QUEUED, time.time())


async def cleanup(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    await client.aclose()


# ---- throughput ------------------------------------------------------------------------------------------------


async def redis_throughput(jobs: int, users: int) -> float:
    """Producers here (a frontend), two consumers in another process (a worker machine): enqueue → read → start
    → acknowledge, timed from the first enqueue to the last acknowledgement."""
    prefix = f"bench-queue-{secrets.token_hex(3)}"
    config = settings_for(prefix, queue_size=jobs).engine  # producers run ahead of the consumers
    producer = StreamQueue(connect(REDIS_URL), config)
    records = [record(i, users) for i in range(jobs)]
    await producer.ensure_group(producer.stream("64x64x2"))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--consume", prefix, str(jobs), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    assert (await child.stdout.readline()).strip() == b"ready"

    async def produce(share: list[JobRecord]) -> None:
        for item in share:
            await producer.enqueue(item, "bench")

    begin = time.perf_counter()
    await asyncio.gather(*(produce(records[i::4]) for i in range(4)))
    assert (await child.stdout.readline()).strip() == b"done"
    elapsed = time.perf_counter() - begin
    await child.wait()
    await producer.redis.aclose()
    await cleanup(prefix)
    return jobs / elapsed


async def consume(prefix: str, jobs: int) -> None:
    """The consumer process of `redis_throughput`: two consumers, as two workers would read."""
    config = settings_for(prefix, queue_size=jobs).engine
    queues = [StreamQueue(connect(REDIS_URL), config) for _ in range(2)]
    stream = queues[0].stream("64x64x2")
    done = 0
    finished = asyncio.Event()

    async def work(queue: StreamQueue, name: str) -> None:
        nonlocal done
        await queue.redis.ping()
        while not finished.is_set():
            entries = await queue.read(name, [stream], 2, 50)  # as a worker reads: one batch of two jobs
            started = await queue.start_many(entries, name)
            if entries:
                await queue.complete_many(entries)  # the no-op pipeline: nothing between start and ack
            done += sum(1 for job in started if job is not None)
            if done >= jobs:
                finished.set()

    for queue in queues:
        await queue.redis.ping()
    print("ready", flush=True)
    await asyncio.gather(*(work(queue, f"c{i}") for i, queue in enumerate(queues)))
    print("done", flush=True)
    for queue in queues:
        await queue.redis.aclose()


class _Item:
    def __init__(self, user_key: str) -> None:
        self.user_key = user_key
        self.image_count = 4


def memory_throughput(jobs: int, users: int) -> float:
    queue: FairQueue[_Item] = FairQueue()
    items = [_Item(f"bench:user{i % users}") for i in range(jobs)]
    begin = time.perf_counter()
    taken = 0
    for start in range(0, jobs, 100):  # producers and the worker interleaved, as in a running service
        for item in items[start : start + 100]:
            queue.push(item)
        while len(queue):
            taken += len(queue.take_batch(8, lambda a, b: True))
    assert taken == jobs
    return jobs / (time.perf_counter() - begin)


# ---- events ----------------------------------------------------------------------------------------------------


async def event_latency(count: int, rate: float, workdir: Path) -> list[float]:
    prefix = f"bench-events-{secrets.token_hex(3)}"
    settings = settings_for(prefix, frontend_id="bench-frontend")
    settings = replace(settings, store=replace(settings.store, url=f"sqlite:///{workdir}/events.db"))
    frontend = RedisJobQueue(settings)
    await frontend.start()
    worker = StreamQueue(connect(REDIS_URL), settings.engine)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    arrived = asyncio.Event()

    class Timed(RedisJob):
        def apply(self, event: ProgressEvent) -> None:
            latencies.append((time.perf_counter() - sent[event.job_id]) * 1000)
            if len(latencies) >= count:
                arrived.set()

    for index in range(count):
        job_id = f"e{index}"
        frontend._handles[job_id] = Timed(replace(record(index, 1), id=job_id))
    for index in range(count):
        job_id = f"e{index}"
        sent[job_id] = time.perf_counter()
        await worker.publish("bench-frontend", ProgressEvent(job_id=job_id, state=JobState.RUNNING, step=1))
        await asyncio.sleep(1 / rate)
    await asyncio.wait_for(arrived.wait(), 60)
    await worker.redis.aclose()
    await frontend.shutdown()
    await cleanup(prefix)
    return latencies


# ---- reclaim ---------------------------------------------------------------------------------------------------


async def reclaim(heartbeat: float, workdir: Path) -> float:
    """Seconds from SIGKILL of the worker running a job to the other worker starting it."""
    import asyncpg

    prefix = f"bench-reclaim-{secrets.token_hex(3)}"
    name = f"bench_queue_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    store_url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "IMAGINE_ENGINE__QUEUE": "redis",
        "IMAGINE_ENGINE__REDIS_URL": REDIS_URL,
        "IMAGINE_ENGINE__REDIS_PREFIX": prefix,
        "IMAGINE_ENGINE__HEARTBEAT_S": str(heartbeat),
        "IMAGINE_ENGINE__BASE_SIZE": "64",
        "IMAGINE_ENGINE__OUTPUT_DIR": str(workdir / "images"),
        "IMAGINE_STORE__URL": store_url,
        "IMAGINE_MODERATION__IMAGE_SCREENING": "false",
        "IMAGINE_WEB__PORT": "0",  # two workers on one host: each its own port for /healthz, /readyz, /metrics
    }
    processes = {}
    try:
        for worker in ("a", "b"):
            log = (workdir / f"worker-{worker}.log").open("ab")
            processes[worker] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots", "worker", "--name", worker, cwd=ROOT, env=env, stdout=log, stderr=log
            )
        for worker in ("a", "b"):
            await logged(workdir / f"worker-{worker}.log", "is taking jobs")
        settings = settings_for(prefix, frontend_id="bench", heartbeat_s=heartbeat)
        settings = replace(settings, store=replace(settings.store, url=store_url))
        frontend = RedisJobQueue(settings)
        await frontend.start()
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        job = await frontend.submit(GenerationRequest("reclaimed", size=(64, 64), steps=50))
        runs: list[float] = []
        killed_at = 0.0
        async for event in job.events():
            if event.state is JobState.RUNNING and event.step == 1 and not runs:
                entry = await client.hget(f"{prefix}:job:{job.id}", "entry")
                pending = await client.xpending_range(frontend.streams.stream("64x64x50"), "workers", entry, entry, 1)
                victim = pending[0]["consumer"]
                os.kill(processes[victim].pid, signal.SIGKILL)
                killed_at = time.perf_counter()
                runs.append(killed_at)
            elif event.state is JobState.RUNNING and event.step == 0 and runs:
                runs.append(time.perf_counter())
            if event.state.finished:
                break
        await client.aclose()
        await frontend.shutdown()
        return runs[1] - killed_at
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        await cleanup(prefix)


async def logged(path: Path, text: str) -> None:
    for _ in range(3000):
        if text in await asyncio.to_thread(path.read_text, errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{path} never said {text!r}")


# ---- result images ---------------------------------------------------------------------------------------------


async def image_transport(workdir: Path, quality: int) -> dict[str, float]:
    jpegs = []
    for seed in range(4):
        buffer = io.BytesIO()
        sample_image("photo", seed).save(buffer, "JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    folder = workdir / "shared"
    folder.mkdir(exist_ok=True)
    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"bench-images-{secrets.token_hex(3)}"
    folder_ms, redis_ms = [], []
    for round_index in range(20):
        begin = time.perf_counter()
        for index, data in enumerate(jpegs):
            path = folder / f"{round_index}-{index}.jpg"
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        for index in range(4):
            (folder / f"{round_index}-{index}.jpg").read_bytes()
        folder_ms.append((time.perf_counter() - begin) * 1000)
        begin = time.perf_counter()
        for index, data in enumerate(jpegs):
            await client.set(f"{prefix}:{round_index}:{index}", data, ex=3600)
        for index in range(4):
            await client.get(f"{prefix}:{round_index}:{index}")
        redis_ms.append((time.perf_counter() - begin) * 1000)
    await client.aclose()
    await cleanup(prefix)
    return {
        "bytes_per_job": float(sum(len(data) for data in jpegs)),
        "folder_ms": statistics.median(folder_ms),
        "redis_ms": statistics.median(redis_ms),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    memory = max(memory_throughput(args.jobs, 200) for _ in range(3))
    redis_rate = await redis_throughput(args.jobs, 200)
    with tempfile.TemporaryDirectory() as folder:
        latencies = await event_latency(args.events, 500.0, Path(folder))
        images = await image_transport(Path(folder), load_settings(env={}).engine.jpeg_quality)
        reclaim_s = await reclaim(args.heartbeat, Path(folder)) if not args.no_reclaim else None
    return {
        "redis_jobs_per_s": round(redis_rate),
        "memory_jobs_per_s": round(memory),
        "redis_vs_memory": round(redis_rate / memory, 4),
        "reclaim_s": round(reclaim_s, 2) if reclaim_s is not None else None,
        "reclaim_heartbeats": round(reclaim_s / args.heartbeat, 2) if reclaim_s is not None else None,
        "heartbeat_s": args.heartbeat,
        "events_p50_ms": round(percentile(latencies, 0.5), 3),
        "events_p99_ms": round(percentile(latencies, 0.99), 3),
        "image_bytes_per_job": int(images["bytes_per_job"]),
        "image_folder_write_read_ms": round(images["folder_ms"], 2),
        "image_redis_set_get_ms": round(images["redis_ms"], 2),
        "jobs": args.jobs,
        "events": args.events,
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--heartbeat", type=float, default=2.0, help="engine.heartbeat_s of the two workers")
    parser.add_argument("--no-reclaim", action="store_true", help="skip the two-process reclaim measurement")
    parser.add_argument("--consume", nargs=2, metavar=("PREFIX", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        asyncio.run(consume(args.consume[0], int(args.consume[1])))
        return
    result = asyncio.run(run(args))
    rows = [
        ("jobs through Redis (no-op pipeline)", f"{result['redis_jobs_per_s']:,} /s"),
        ("jobs through the in-process queue", f"{result['memory_jobs_per_s']:,} /s"),
        ("reclaim of a SIGKILLed worker's job", f"{result['reclaim_s']} s ({result['reclaim_heartbeats']} heartbeats)"),
        ("event worker -> frontend p50 / p99", f"{result['events_p50_ms']} / {result['events_p99_ms']} ms"),
        ("result images per job", f"{result['image_bytes_per_job']:,} bytes"),
        ("  write + read, shared folder", f"{result['image_folder_write_read_ms']} ms"),
        ("  SET (TTL) + GET, Redis", f"{result['image_redis_set_get_ms']} ms"),
    ]
    for label, value in rows:
        print(f"{label:<42} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
