"""Engine benchmark: overhead of the engine against a plain pipeline loop, batching, and post-processing cost.

    .venv/bin/python bench/engine.py                 # 8 jobs × 4 images at 1280², the issue's setting
    .venv/bin/python bench/engine.py --jobs 2 --size 512 --repeats 1   # a quick look

All ratios are measured in this process, on the same loaded model, in alternating rounds (this machine is shared
and noisy: compare ratios, not absolute times). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import Settings, load_settings  # noqa: E402
from engine.local import LocalJobQueue  # noqa: E402
from engine.postprocess import ImageContext, PlainJpeg  # noqa: E402
from engine.requests import GenerationRequest, Requester  # noqa: E402
from engine.worker.batches import load_runner  # noqa: E402
from engine.worker.finishing import build_postprocessor  # noqa: E402
from engine.worker.runner import BatchShape, ImageTask, PipelineRunner  # noqa: E402

USERS = [Requester(platform="bench", user_id=name) for name in ("ann", "ben")]


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def raw_loop(runner: PipelineRunner, settings: Settings, jobs: int, size: int, out: Path) -> float:
    """The baseline: one `pipe(...)` call per prompt, then the same post-processing and file writes, in turn."""
    postprocess = build_postprocessor(settings)
    shape = BatchShape(size, size, settings.engine.steps)
    started = time.perf_counter()
    for job in range(jobs):
        tasks = [ImageTask(f"raw{job}", index, 1000 * job + index, f"prompt {job}", "") for index in range(4)]
        images = runner.generate(tasks, shape, lambda step, total: None)
        for task, image in zip(tasks, images, strict=True):
            context = ImageContext(task.job_id, task.index, task.seed, task.prompt, runner.model_name)
            (out / f"raw-{job}-{task.index}.jpg").write_bytes(postprocess(image, context).jpeg)
    return time.perf_counter() - started


async def engine_run(runner: PipelineRunner, settings: Settings, jobs: int, size: int) -> float:
    engine = LocalJobQueue(settings, runner_factory=lambda: runner)
    await engine.start()
    try:
        started = time.perf_counter()
        submitted = [
            await engine.submit(
                GenerationRequest(prompt=f"prompt {job}", requester=USERS[job % 2], seed=1000 * job, size=(size, size))
            )
            for job in range(jobs)
        ]
        await asyncio.gather(*(job.result() for job in submitted))
        return time.perf_counter() - started
    finally:
        await engine.shutdown()


def with_batch(settings: Settings, max_batch_images: int, workdir: Path, name: str) -> Settings:
    engine = replace(settings.engine, max_batch_images=max_batch_images, output_dir=str(workdir / name))
    return replace(settings, engine=engine, store=replace(settings.store, url=f"sqlite:///{workdir}/{name}.db"))


def postprocess_cost(runner: PipelineRunner, settings: Settings, size: int, count: int) -> tuple[float, float]:
    """ms per image for the service's post-processing and for a bare Pillow JPEG encode of the same images."""
    shape = BatchShape(size, size, settings.engine.steps)
    tasks = [ImageTask("pp", index, 77 + index, "post-processing sample", "") for index in range(4)]
    images = runner.generate(tasks, shape, lambda step, total: None)
    service, bare = build_postprocessor(settings), PlainJpeg(settings.engine.jpeg_quality)
    timings: dict[str, list[float]] = {"service": [], "bare": []}
    for round_index in range(count):
        image = images[round_index % len(images)]
        context = ImageContext("pp", round_index, 77, "post-processing sample", runner.model_name)
        for name, function in (("bare", bare), ("service", service)):
            started = time.perf_counter()
            function(image, context)
            timings[name].append((time.perf_counter() - started) * 1000)
    return statistics.median(timings["service"]), statistics.median(timings["bare"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8, help="jobs of four images (default 8)")
    parser.add_argument("--size", type=int, default=1280, help="image side in pixels (default 1280)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of each measurement")
    parser.add_argument("--postprocess-images", type=int, default=12)
    args = parser.parse_args()

    base = load_settings()
    runner = load_runner(base)
    warm_up = [ImageTask("warm", index, index, "warm-up", "") for index in range(4)]
    with ThreadPoolExecutor(1) as thread:
        thread.submit(
            runner.generate, warm_up, BatchShape(args.size, args.size, base.engine.steps), lambda step, total: None
        ).result()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as tmp:
        workdir = Path(tmp)
        raw_times, engine_times = [], []
        for repeat in range(args.repeats):
            raw_dir = workdir / f"raw{repeat}"
            raw_dir.mkdir()
            # in a thread of its own, like the engine's pipeline thread: the same threading conditions for both
            with ThreadPoolExecutor(1) as thread:
                raw_times.append(thread.submit(raw_loop, runner, base, args.jobs, args.size, raw_dir).result())
            engine_times.append(
                asyncio.run(engine_run(runner, with_batch(base, 4, workdir, f"engine{repeat}"), args.jobs, args.size))
            )
        engine_vs_raw = statistics.median(raw_times) / statistics.median(engine_times)
        rows += [
            ("raw pipe() loop, s", f"{statistics.median(raw_times):.2f}"),
            ("engine, s", f"{statistics.median(engine_times):.2f}"),
            ("engine_vs_raw (throughput)", f"{engine_vs_raw:.3f}"),
        ]

        batched, sequential, peaks = [], [], {"batched": 0.0, "sequential": 0.0}
        for repeat in range(args.repeats):
            for name, limit, sink in (("sequential", 4, sequential), ("batched", 8, batched)):
                reset_peak_rss()
                sink.append(
                    asyncio.run(engine_run(runner, with_batch(base, limit, workdir, f"{name}{repeat}"), 2, args.size))
                )
                peaks[name] = max(peaks[name], peak_rss_mb())
        batched_vs_sequential = statistics.median(sequential) / statistics.median(batched)
        rows += [
            ("two users, one batch of 8, s", f"{statistics.median(batched):.2f}"),
            ("two users, one after the other, s", f"{statistics.median(sequential):.2f}"),
            ("batched_vs_sequential (throughput)", f"{batched_vs_sequential:.3f}"),
            ("peak RSS batched / sequential, MB", f"{peaks['batched']:.0f} / {peaks['sequential']:.0f}"),
        ]

        service_ms, bare_ms = postprocess_cost(runner, base, args.size, args.postprocess_images)
        rows += [
            ("post-processing, ms per image", f"{service_ms:.1f}"),
            ("bare Pillow JPEG encode, ms per image", f"{bare_ms:.1f}"),
            ("post-processing / bare encode", f"{service_ms / bare_ms:.2f}"),
        ]

    width = max(len(name) for name, _ in rows)
    print(
        f"engine benchmark: {args.jobs} jobs × 4 images at {args.size}², {base.engine.steps} steps, "
        f"model {runner.model_name}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")
    print(
        json.dumps(
            {
                "engine_vs_raw": round(engine_vs_raw, 4),
                "batched_vs_sequential": round(batched_vs_sequential, 4),
                "batched_peak_rss_ratio": round(peaks["batched"] / peaks["sequential"], 4),
                "postprocess_ms_per_image": round(service_ms, 2),
                "postprocess_vs_bare_jpeg": round(service_ms / bare_ms, 3),
                "jobs": args.jobs,
                "size": args.size,
                "steps": base.engine.steps,
            }
        )
    )


if __name__ == "__main__":
    main()
