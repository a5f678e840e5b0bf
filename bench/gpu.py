"""Real-size architectures on the engine: fast paths on and off, engine vs a plain loop, batching, FLOP/s, MFU.

    .venv/bin/python bench/gpu.py                       # CPU: scaled-down SDXL (widths / 10), 256², 4 steps
    python3 bench/gpu.py --time-limit 420               # CUDA: full-size SDXL, 1280² x 4 images, 30 steps
    python3 bench/gpu.py --arch sd15 --model DIR        # an existing diffusers folder instead of building one

The model is built with random weights (`imagine model build-random`: speed does not depend on the weights'
values) into a temporary folder and loaded through the engine's own `from_pretrained` path. Every figure is
measured in this process on the one loaded pipeline, each fast path off and on in alternating rounds (shared
machines are noisy: compare ratios). Prints a table, then ONE JSON line with, among others:
- images_per_s: the engine's throughput (jobs of 4 images through LocalJobQueue, post-processing included);
- engine_vs_raw: that ÷ a plain loop of `runner.generate` + the same post-processing in turn (goal ≥ 0.98);
- batched_vs_sequential: {"2": .., "4": ..} prompts in one pipeline call vs one call each (goal ≥ 1.2 on a GPU);
- unet_tflops / mfu: UNet FLOPs (torch.utils.flop_counter) per denoising step x steps ÷ the denoising loop's time,
  and that ÷ the device's dense bf16 peak (datasheet; null on CPU);
- peak_memory_gib (GPU: max allocated; CPU: peak RSS), first_image_s (submit → a job's four images on a warm
  engine), postprocess_vs_model_per_image (post-processing time per image ÷ model time per image; goal ≤ 0.1).
A `--time-limit` skips what would not fit (listed under "skipped"); compiling is measured last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bots.cli import _prepare_process_environment  # noqa: E402

_prepare_process_environment()  # as `imagine serve` runs: OMP_WAIT_POLICY=PASSIVE etc., before torch loads

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from config.settings import Settings, load_settings  # noqa: E402
from engine.local import LocalJobQueue  # noqa: E402
from engine.postprocess import ImageContext  # noqa: E402
from engine.requests import GenerationRequest, Requester  # noqa: E402
from engine.worker.batches import postprocess_pool_size  # noqa: E402
from engine.worker.fast_paths import DTYPES, apply, batch_buckets  # noqa: E402
from engine.worker.finishing import build_postprocessor  # noqa: E402
from engine.worker.model import LoadedModel, load_model  # noqa: E402
from engine.worker.random_model import build_random_model  # noqa: E402
from engine.worker.runner import BatchShape, ImageTask, PipelineRunner  # noqa: E402

USERS = [Requester(platform="bench", user_id=f"user{n}") for n in range(4)]
IMAGES_PER_JOB = 4

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s. First match wins, so the
# more specific names come first. (A 8192³ bf16 matmul measured ~790 on this workplace's H200: ~80% of peak.)
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("RTX 4090", 165.2),  # with float32 accumulation, as PyTorch uses
    ("A10G", 70.0),
    ("A10", 125.0),
]


def bf16_peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in BF16_PEAK_TFLOPS if name in device_name), None)


class Clock:
    """Wall time that waits for the GPU, and a budget that later measurements check before they start."""

    def __init__(self, device: torch.device, limit_s: float | None) -> None:
        self.device = device
        self.started = time.perf_counter()
        self.limit_s = limit_s
        self.skipped: list[str] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def allows(self, name: str, estimate_s: float) -> bool:
        if self.limit_s is None or time.perf_counter() - self.started + estimate_s <= self.limit_s:
            return True
        self.skipped.append(name)
        print(f"  (skipped {name}: about {estimate_s:.0f} s would pass the time limit)", flush=True)
        return False


# ---- setup -----------------------------------------------------------------------------------------------------


def bench_settings(model: Path, device: str, dtype: str, steps: int, workdir: Path, name: str) -> Settings:
    base = load_settings(env={})
    engine = replace(
        base.engine,
        model=str(model),
        device=device,
        dtype=dtype,
        steps=steps,
        cache_dir=str(workdir / "cache"),
        output_dir=str(workdir / name),
    )
    moderation = replace(base.moderation, image_screening=False)  # screening is not the GPU's work
    return replace(
        base, engine=engine, moderation=moderation, store=replace(base.store, url=f"sqlite:///{workdir}/{name}.db")
    )


def with_engine(settings: Settings, workdir: Path, name: str, **engine: Any) -> Settings:
    return replace(
        settings,
        engine=replace(settings.engine, output_dir=str(workdir / name), **engine),
        store=replace(settings.store, url=f"sqlite:///{workdir}/{name}.db"),
    )


def tasks_for(job: str, count: int, seed: int = 0) -> list[ImageTask]:
    return [
        ImageTask(job, index, seed + index, f"a lighthouse at dawn, oil painting {job}", "") for index in range(count)
    ]


def timed_generate(runner: PipelineRunner, clock: Clock, tasks: list[ImageTask], shape: BatchShape) -> float:
    started = clock.now()
    runner.generate(tasks, shape, lambda step, total: None)
    return clock.now() - started


# ---- fast paths on and off ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def switched(
    loaded: LoadedModel, runner: PipelineRunner, name: str, on: bool, buckets: tuple[int, ...]
) -> Iterator[None]:
    """The pipeline with one fast path set to `on` (everything else as loaded), restored afterwards."""
    base = loaded.fast_paths
    pipeline = loaded.pipeline
    if name in ("attention", "channels_last", "vae_slicing", "vae_tiling"):
        value: Any = ("sdpa" if on else "eager") if name == "attention" else on
        apply(pipeline, replace(base, **{name: value}))
        try:
            yield
        finally:
            apply(pipeline, base)
    elif name == "pad_batches":
        runner.buckets = buckets if on else ()
        try:
            yield
        finally:
            runner.buckets = ()
    elif name == "pinned_transfer":
        runner.pinned_transfer = on
        try:
            yield
        finally:
            runner.pinned_transfer = base.pinned_transfer
    else:
        raise ValueError(name)


def measure_switch(
    loaded: LoadedModel,
    runner: PipelineRunner,
    clock: Clock,
    name: str,
    tasks: list[ImageTask],
    shape: BatchShape,
    repeats: int,
    buckets: tuple[int, ...],
) -> dict[str, float]:
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for on in (False, True):
            with switched(loaded, runner, name, on, buckets):
                times[on].append(timed_generate(runner, clock, tasks, shape))
    off, on_ = statistics.median(times[False]), statistics.median(times[True])
    return {"off_s": round(off, 3), "on_s": round(on_, 3), "speedup": round(off / on_, 3)}


def measure_dtypes(
    loaded: LoadedModel,
    runner: PipelineRunner,
    clock: Clock,
    tasks: list[ImageTask],
    shape: BatchShape,
    dtypes: list[str],
) -> dict[str, float]:
    """Seconds per call with the whole pipeline in each dtype (the VAE in its `auto` dtype for that one)."""
    from engine.worker.fast_paths import vae_dtype

    pipeline, base = loaded.pipeline, loaded.fast_paths
    loaded_dtype = pipeline.unet.dtype
    results: dict[str, float] = {}
    try:
        for name in dtypes:
            dtype = DTYPES[name]
            pipeline.to(dtype=dtype)
            apply(pipeline, replace(base, vae_dtype=vae_dtype("auto", dtype, pipeline.vae.config)))
            timed_generate(runner, clock, tasks, shape)  # warm-up for this dtype's kernels
            results[name] = round(timed_generate(runner, clock, tasks, shape), 3)
    finally:
        pipeline.to(dtype=loaded_dtype)
        apply(pipeline, base)
    return results


def measure_vae_upcast(
    loaded: LoadedModel, runner: PipelineRunner, clock: Clock, tasks: list[ImageTask], shape: BatchShape
) -> dict[str, float] | None:
    """Decode time of the batch's latents with the VAE in float32 vs in the model's dtype (when that is not
    float32): the cost of the upcast a float16 SDXL VAE needs."""
    pipeline, base = loaded.pipeline, loaded.fast_paths
    if pipeline.unet.dtype == torch.float32:
        return None
    channels = pipeline.unet.config.in_channels
    scale = pipeline.vae_scale_factor
    latents = torch.randn(len(tasks), channels, shape.height // scale, shape.width // scale).to(
        pipeline.device, pipeline.unet.dtype
    )
    results = {}
    try:
        for name, dtype in (("model_dtype", pipeline.unet.dtype), ("float32", torch.float32)):
            apply(pipeline, replace(base, vae_dtype=dtype))
            with torch.inference_mode():
                runner.decode(latents)
                started = clock.now()
                runner.decode(latents)
                results[f"{name}_decode_s"] = round(clock.now() - started, 3)
    finally:
        apply(pipeline, base)
    return results


def measure_compile(
    loaded: LoadedModel, runner: PipelineRunner, clock: Clock, tasks: list[ImageTask], shape: BatchShape, mode: str
) -> dict[str, float]:
    """torch.compile of the UNet: the first call's extra time (compiling) apart from the steady-state speed-up."""
    unet = loaded.pipeline.unet
    eager = timed_generate(runner, clock, tasks, shape)
    unet.compile(mode=mode)
    try:
        first = timed_generate(runner, clock, tasks, shape)
        compiled = min(timed_generate(runner, clock, tasks, shape) for _ in range(2))
    finally:
        unet._compiled_call_impl = None  # back to eager (nn.Module.compile keeps the compiled call here)
    return {
        "mode": mode,  # type: ignore[dict-item]
        "compile_s": round(first - compiled, 1),
        "eager_s": round(eager, 3),
        "compiled_s": round(compiled, 3),
        "speedup": round(eager / compiled, 3),
    }


# ---- FLOPs ---------------------------------------------------------------------------------------------------------


def unet_flops_per_step(runner: PipelineRunner, tasks: list[ImageTask], shape: BatchShape) -> int:
    """FLOPs of the UNet calls of one denoising step (both halves of classifier-free guidance), counted by
    torch.utils.flop_counter around the UNet's own forward during a one-step call."""
    unet = runner.pipe.unet
    original = unet.forward
    counted: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        with FlopCounterMode(display=False) as counter:
            result = original(*args, **kwargs)
        counted.append(counter.get_total_flops())
        return result

    unet.forward = counting
    try:
        runner.generate(tasks, replace(shape, steps=1), lambda step, total: None)
    finally:
        del unet.forward
    return int(statistics.median(counted))


def denoising_loop_s(runner: PipelineRunner, clock: Clock, tasks: list[ImageTask], shape: BatchShape) -> float:
    """Seconds per denoising step, timed between the step callbacks (synchronised: the GPU has finished)."""
    marks: list[float] = []
    runner.generate(tasks, shape, lambda step, total: marks.append(clock.now()))
    return (marks[-1] - marks[0]) / (len(marks) - 1)


# ---- the engine -------------------------------------------------------------------------------------------------


async def engine_run(runner: PipelineRunner, settings: Settings, jobs: int, size: int) -> float:
    engine = LocalJobQueue(settings, runner_factory=lambda: runner)
    await engine.start()
    try:
        started = time.perf_counter()
        submitted = [
            await engine.submit(
                GenerationRequest(
                    prompt=f"prompt {job}", requester=USERS[job % len(USERS)], seed=1000 * job, size=(size, size)
                )
            )
            for job in range(jobs)
        ]
        await asyncio.gather(*(job.result() for job in submitted))
        return time.perf_counter() - started
    finally:
        await engine.shutdown()


def raw_loop(runner: PipelineRunner, settings: Settings, jobs: int, size: int, out: Path) -> float:
    """The baseline: one `generate` per job, then the same post-processing and file writes, in turn."""
    postprocess = build_postprocessor(settings)
    shape = BatchShape(size, size, settings.engine.steps)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for job in range(jobs):
        tasks = tasks_for(f"raw{job}", IMAGES_PER_JOB, 1000 * job)
        images = runner.generate(tasks, shape, lambda step, total: None)
        for task, image in zip(tasks, images, strict=True):
            context = ImageContext(task.job_id, task.index, task.seed, task.prompt, runner.model_name)
            (out / f"raw-{job}-{task.index}.jpg").write_bytes(postprocess(image, context).jpeg)
    return time.perf_counter() - started


PIPELINE_THREAD = ThreadPoolExecutor(1, thread_name_prefix="bench-pipeline")


def in_pipeline_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run in one thread of its own, like the engine's pipeline thread (the same threading conditions)."""
    return PIPELINE_THREAD.submit(function, *args).result()


def postprocess_ms(runner: PipelineRunner, settings: Settings, images: list[Any], count: int) -> float:
    postprocess = build_postprocessor(settings)
    timings = []
    for index in range(count):
        context = ImageContext("pp", index, index, "post-processing sample", runner.model_name)
        started = time.perf_counter()
        postprocess(images[index % len(images)], context)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 2**20  # type: ignore[union-attr]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


# ---- main --------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("sd15", "sdxl"), default="sdxl")
    parser.add_argument("--model", help="an existing diffusers folder (default: build one with random weights)")
    parser.add_argument("--width-divisor", type=int, default=1 if cuda else 10, help="model widths / N (CPU: 10)")
    parser.add_argument("--size", type=int, default=1280 if cuda else 256, help="image side (CPU default 256)")
    parser.add_argument("--steps", type=int, default=30 if cuda else 4)
    parser.add_argument("--switch-steps", type=int, default=10 if cuda else 4, help="steps when timing a path")
    parser.add_argument("--jobs", type=int, default=3, help="jobs of 4 images for engine vs raw")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of each on/off pair")
    parser.add_argument("--engine-repeats", type=int, default=1 if cuda else 2, help="rounds of engine vs raw")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode to measure, or 'skip'")
    parser.add_argument("--time-limit", type=float, help="seconds: skip measurements that would not fit")
    parser.add_argument("--json-out", help="also write the JSON object to this file")
    return parser.parse_args()


def main() -> None:  # noqa: C901  (one measurement after another, in the order they are reported)
    args = parse_args()
    device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    clock = Clock(torch.device(device_kind), args.time_limit)
    rows: list[tuple[str, str]] = []
    result: dict[str, Any] = {}

    def row(name: str, value: Any) -> None:
        rows.append((name, str(value)))
        print(f"  {name}: {value}", flush=True)

    with tempfile.TemporaryDirectory(prefix="imagine-gpu-bench-") as tmp:
        workdir = Path(tmp)
        if args.model:
            model, build_s, parameters = Path(args.model), None, None
        else:
            report = build_random_model(workdir / f"{args.arch}-random", args.arch, width_divisor=args.width_divisor)
            model, build_s, parameters = report.folder, round(report.seconds, 1), report.parameters
            row("build (random weights), s", build_s)
        settings = bench_settings(model, device_kind, args.dtype, args.steps, workdir, "base")
        started = time.perf_counter()
        loaded = load_model(settings.engine)
        load_s = time.perf_counter() - started
        device = loaded.pipeline.device
        clock.device = device
        row("load (from_pretrained + fast paths), s", f"{load_s:.1f}")
        runner = PipelineRunner(
            loaded.pipeline,
            loaded.info.name,
            settings.engine.guidance_scale,
            pinned_transfer=loaded.fast_paths.pinned_transfer,
        )
        size, images = args.size, IMAGES_PER_JOB
        shape = BatchShape(size, size, args.steps)
        switch_shape = BatchShape(size, size, args.switch_steps)
        tasks = tasks_for("bench", images)
        buckets = batch_buckets(IMAGES_PER_JOB)

        warm_s = in_pipeline_thread(timed_generate, runner, clock, tasks, shape)  # kernels, allocator, caches
        row("warm-up call (first ever), s", f"{warm_s:.2f}")
        call_s = in_pipeline_thread(timed_generate, runner, clock, tasks, shape)
        model_s_per_image = call_s / images
        row(f"one call, {images} x {size}², {args.steps} steps, s", f"{call_s:.2f}")

        flops = in_pipeline_thread(unet_flops_per_step, runner, tasks, shape)
        step_s = in_pipeline_thread(denoising_loop_s, runner, clock, tasks, shape)
        unet_tflops = flops / step_s / 1e12
        peak = bf16_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        mfu = unet_tflops / peak if peak else None
        row("UNet TFLOP per denoising step (both CFG halves)", f"{flops / 1e12:.3f}")
        row("denoising step, s / achieved UNet TFLOP/s", f"{step_s:.3f} / {unet_tflops:.2f}")
        row("MFU vs dense bf16 peak", "n/a (CPU)" if mfu is None else f"{mfu:.3f} (peak {peak})")

        # -- fast paths, each off and on, at --switch-steps
        switches: dict[str, Any] = {}
        estimate = 2 * args.repeats * call_s * args.switch_steps / args.steps
        names = ["attention", "channels_last", "vae_slicing", "vae_tiling", "pad_batches"]
        names += ["pinned_transfer"] if device.type == "cuda" else []
        for name in names:
            if clock.allows(f"switch:{name}", estimate):
                switch_tasks = tasks[:3] if name == "pad_batches" else tasks  # 3 images padded to 4, or not
                switches[name] = in_pipeline_thread(
                    measure_switch, loaded, runner, clock, name, switch_tasks, switch_shape, args.repeats, buckets
                )
                row(f"fast path {name}: off / on s (speed-up)", _switch_text(switches[name]))
        dtypes = ["float32", "bfloat16"] + (["float16"] if device.type == "cuda" else [])
        if clock.allows("switch:dtype", 4 * len(dtypes) * call_s * args.switch_steps / args.steps):
            switches["dtype_s"] = in_pipeline_thread(measure_dtypes, loaded, runner, clock, tasks, switch_shape, dtypes)
            row("whole pipeline per dtype, s", switches["dtype_s"])
        upcast = in_pipeline_thread(measure_vae_upcast, loaded, runner, clock, tasks, switch_shape)
        if upcast:
            switches["vae_upcast"] = upcast
            row("VAE decode in the model's dtype / float32, s", upcast)

        # -- the engine against a plain loop, same post-processing
        if clock.allows("engine_vs_raw", 2 * args.engine_repeats * args.jobs * call_s * 1.3):
            raw_times, engine_times = [], []
            reset_peak_memory(device)
            for repeat in range(args.engine_repeats):  # alternating rounds
                raw_dir = workdir / f"raw{repeat}"
                raw_times.append(in_pipeline_thread(raw_loop, runner, settings, args.jobs, size, raw_dir))
                base = with_engine(settings, workdir, f"engine{repeat}", max_batch_images=IMAGES_PER_JOB)
                engine_times.append(asyncio.run(engine_run(runner, base, args.jobs, size)))
            raw_s, engine_s = statistics.median(raw_times), statistics.median(engine_times)
            result["peak_memory_gib"] = round(peak_memory_gib(device), 2)
            result["images_per_s"] = round(args.jobs * IMAGES_PER_JOB / engine_s, 4)
            result["engine_vs_raw"] = round(raw_s / engine_s, 4)
            row("raw loop / engine, s", f"{raw_s:.2f} / {engine_s:.2f}")
            row("engine_vs_raw (throughput)", result["engine_vs_raw"])
            row("images/s (engine)", result["images_per_s"])

        # -- several prompts in one pipeline call vs one call each
        batched: dict[str, float] = {}
        peak_by_images: dict[str, float] = {}
        for prompts in (2, 4):
            if not clock.allows(f"batched_vs_sequential:{prompts}", 2.2 * prompts * call_s):
                continue
            one_by_one = with_engine(settings, workdir, f"seq{prompts}", max_batch_images=IMAGES_PER_JOB)
            together = with_engine(settings, workdir, f"bat{prompts}", max_batch_images=IMAGES_PER_JOB * prompts)
            sequential_s = asyncio.run(engine_run(runner, one_by_one, prompts, size))
            reset_peak_memory(device)
            batched_s = asyncio.run(engine_run(runner, together, prompts, size))
            peak_by_images[str(IMAGES_PER_JOB * prompts)] = round(peak_memory_gib(device), 2)
            batched[str(prompts)] = round(sequential_s / batched_s, 4)
            row(f"{prompts} prompts one call each / in one call, s", f"{sequential_s:.2f} / {batched_s:.2f}")

        # -- latency of one job on a warm, idle engine
        first_image_s = None
        if clock.allows("first_image", 2 * call_s):
            single = with_engine(settings, workdir, "latency", max_batch_images=IMAGES_PER_JOB)
            first_image_s = round(asyncio.run(engine_run(runner, single, 1, size)), 3)
            row("first image (submit → four finished JPEGs, warm engine), s", first_image_s)

        # -- post-processing against the model's time per image
        pictures = in_pipeline_thread(runner.generate, tasks, switch_shape, lambda step, total: None)
        post_ms = postprocess_ms(runner, settings, pictures, 8)
        threads = postprocess_pool_size(settings.engine)
        post_ratio = post_ms / 1000 / model_s_per_image
        row("post-processing per image, ms (one thread)", f"{post_ms:.1f}")
        row(f"post-processing / model time per image (pool of {threads}: ÷{threads})", f"{post_ratio:.4f}")

        # -- compiling, last: the slowest and the least likely to fit
        if args.compile_mode != "skip" and clock.allows("compile", 4 * call_s * args.switch_steps / args.steps + 150):
            switches["compile_unet"] = in_pipeline_thread(
                measure_compile, loaded, runner, clock, tasks, switch_shape, args.compile_mode
            )
            row("torch.compile of the UNet", switches["compile_unet"])

    result |= {
        "batched_vs_sequential": batched,
        "unet_tflops": round(unet_tflops, 4),
        "mfu": None if mfu is None else round(mfu, 4),
        "first_image_s": first_image_s,
        "postprocess_vs_model_per_image": round(post_ratio, 4),
        "postprocess_ms_per_image": round(post_ms, 1),
        "postprocess_threads": threads,
        "model_s_per_image": round(model_s_per_image, 4),
        "fast_paths": switches,
        "peak_memory_gib_by_images": peak_by_images,
        "load_s": round(load_s, 1),
        "build_s": build_s,
        "warm_up_s": round(warm_s, 2),
        "config": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
            "memory": "gpu max allocated" if device.type == "cuda" else "cpu peak rss",
            "arch": args.arch,
            "width_divisor": args.width_divisor if not args.model else None,
            "parameters": parameters,
            "dtype": loaded.info.dtype,
            "size": size,
            "images_per_job": IMAGES_PER_JOB,
            "steps": args.steps,
            "switch_steps": args.switch_steps,
            "jobs": args.jobs,
            "repeats": args.repeats,
            "engine_repeats": args.engine_repeats,
            "fast_paths_as_loaded": loaded.fast_paths.describe(),
            "unet_tflop_per_step": round(flops / 1e12, 4),
            "bf16_peak_tflops": peak,
        },
        "skipped": clock.skipped,
        "elapsed_s": round(time.perf_counter() - clock.started, 1),
    }
    line = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n", encoding="utf-8")
    print(line)


def _switch_text(measured: dict[str, float]) -> str:
    return f"{measured['off_s']:.3f} / {measured['on_s']:.3f} ({measured['speedup']:.2f}x)"


if __name__ == "__main__":
    try:
        main()
    finally:
        PIPELINE_THREAD.shutdown()
