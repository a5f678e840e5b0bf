"""How fast is the tiny model? 4 images at 1280x1280, 4 steps, classifier-free guidance, on this machine.

Default: builds each architecture variant into a temporary folder, loads it with `engine.worker.model.load_model` (so
the engine's own tuning applies) and times one pipeline call after a small warm-up call, split into UNet and
VAE-decoder time with forward hooks; `cpu s` is the process CPU time of the call. The first variant is the
baseline of the ratios (the sizes a first spike used). The machine may be shared: other load inflates wall time
(badly so with 2 threads on 2 busy cores), so compare `cpu s` ratios and use --repeat.

--cold N: N fresh processes, each importing, loading the built tiny model and making the one call, as
`imagine generate` does (without JPEG encoding and provenance). Reports each phase, the fastest run counting.

    .venv/bin/python bench/tiny_model.py [--images 4] [--size 1280] [--steps 4] [--threads N] [--repeat N]
    .venv/bin/python bench/tiny_model.py --cold 3

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config.settings import EngineSettings  # noqa: E402
from engine.worker.model import load_model  # noqa: E402
from engine.worker.tiny_model import TINY_ARCHITECTURE, TinyArchitecture, build_tiny_model  # noqa: E402

PROMPT = "a lighthouse at dawn, oil painting"


def _variant(unet: tuple[int, ...], vae: tuple[int, int, int, int]) -> TinyArchitecture:
    return replace(TINY_ARCHITECTURE, unet_channels=unet, vae_channels=vae)


CHOSEN = "chosen: unet (8,16,32,64), vae (4,4,8,16)"
VARIANTS: dict[str, TinyArchitecture] = {
    "spike: unet (32,64,64), vae (32,64,64,64)": _variant((32, 64, 64), (32, 64, 64, 64)),
    "unet (32,64,64), vae (8,16,32,32)": _variant((32, 64, 64), (8, 16, 32, 32)),
    "unet (16,32,64), vae (8,16,32,32)": _variant((16, 32, 64), (8, 16, 32, 32)),
    "unet (16,32,64,64), vae (8,16,32,32)": _variant((16, 32, 64, 64), (8, 16, 32, 32)),
    "unet (16,32,64), vae (4,8,16,32)": _variant((16, 32, 64), (4, 8, 16, 32)),
    "unet (16,32,64,64), vae (4,8,16,32)": _variant((16, 32, 64, 64), (4, 8, 16, 32)),
    CHOSEN: TINY_ARCHITECTURE,
}


@dataclass
class Timing:
    unet_s: float = 0.0
    vae_s: float = 0.0
    total_s: float = 0.0
    cpu_s: float = 0.0
    load_s: float = 0.0


def _time_module(module: torch.nn.Module, timing: Timing, field: str) -> list[Any]:
    started: list[float] = []
    return [
        module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
        module.register_forward_hook(
            lambda *_: setattr(timing, field, getattr(timing, field) + time.perf_counter() - started.pop())
        ),
    ]


def _generate(pipe: Any, args: argparse.Namespace) -> None:
    images = pipe(
        PROMPT,
        height=args.size,
        width=args.size,
        num_inference_steps=args.steps,
        num_images_per_prompt=args.images,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
    ).images
    assert len(images) == args.images and images[0].size == (args.size, args.size)


def measure(architecture: TinyArchitecture, args: argparse.Namespace, slicing: bool = True) -> Timing:
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_tiny_model(Path(scratch) / "model", architecture)
        started = time.perf_counter()
        pipe = load_model(EngineSettings(model=str(folder), device="cpu")).pipeline
        load_s = time.perf_counter() - started
    if args.threads:
        torch.set_num_threads(args.threads)
    if not slicing:
        pipe.vae.disable_slicing()
    pipe(PROMPT, height=64, width=64, num_inference_steps=1)  # one-time kernel set-up, as a warm service has
    best: Timing | None = None
    for _ in range(args.repeat):  # other load on the machine only ever adds time: the fastest run counts
        run = Timing(load_s=load_s)
        hooks = [*_time_module(pipe.unet, run, "unet_s"), *_time_module(pipe.vae.decoder, run, "vae_s")]
        started, started_cpu = time.perf_counter(), time.process_time()
        _generate(pipe, args)
        run.total_s, run.cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
        for hook in hooks:
            hook.remove()
        best = run if best is None or run.total_s < best.total_s else best
    assert best is not None
    return best


def compare_variants(args: argparse.Namespace) -> dict[str, Any]:
    runs = [(name, architecture, True) for name, architecture in VARIANTS.items()]
    runs.append(("chosen, vae slicing off", TINY_ARCHITECTURE, False))
    print(
        f"threads={args.threads or 'as the engine sets'} repeat={args.repeat}: "
        f"{args.images}x{args.size}², {args.steps} steps, CFG on"
    )
    print(f"{'variant':44} {'unet s':>7} {'vae s':>7} {'total s':>8} {'cpu s':>7} {'load s':>7} {'cpu vs base':>12}")
    results: dict[str, Timing] = {}
    for name, architecture, slicing in runs:
        timing = results[name] = measure(architecture, args, slicing)
        ratio = timing.cpu_s / next(iter(results.values())).cpu_s
        print(
            f"{name:44} {timing.unet_s:7.2f} {timing.vae_s:7.2f} {timing.total_s:8.2f} {timing.cpu_s:7.2f} "
            f"{timing.load_s:7.2f} {ratio:12.2f}",
            flush=True,
        )
    return {name: {key: round(value, 3) for key, value in asdict(t).items()} for name, t in results.items()}


def cold_run(folder: str, args: argparse.Namespace) -> dict[str, float]:
    """One fresh process's phases; `imports_s` runs from the script's first line to a usable diffusers."""
    import diffusers  # noqa: F401 - part of what a fresh process pays for before loading

    imported, imported_cpu = time.perf_counter(), time.process_time()
    pipe = load_model(EngineSettings(model=folder)).pipeline
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded, loaded_cpu = time.perf_counter(), time.process_time()
    _generate(pipe, args)
    done, done_cpu = time.perf_counter(), time.process_time()
    return {
        "imports_s": imported - T0,
        "load_s": loaded - imported,
        "call_s": done - loaded,
        "total_s": done - T0,
        "imports_cpu_s": imported_cpu,
        "load_cpu_s": loaded_cpu - imported_cpu,
        "call_cpu_s": done_cpu - loaded_cpu,
    }


def compare_cold(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = str(build_tiny_model(Path(scratch) / "model"))
        command = [
            sys.executable,
            __file__,
            "--cold-run",
            folder,
            "--images",
            str(args.images),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
        ]
        for _ in range(args.cold):
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
    print(
        f"{args.cold} fresh processes, threads={args.threads or 'as the engine sets'}: "
        f"{args.images}x{args.size}², {args.steps} steps, CFG on"
    )
    print(f"{'run':>4} {'imports s':>10} {'load s':>7} {'call s':>7} {'total s':>8}   cpu s: imports  load  call")
    for index, run in enumerate(runs):
        print(
            f"{index:4} {run['imports_s']:10.2f} {run['load_s']:7.2f} {run['call_s']:7.2f} {run['total_s']:8.2f}"
            f"   {run['imports_cpu_s']:14.2f} {run['load_cpu_s']:5.2f} {run['call_cpu_s']:5.2f}"
        )
    best = min(runs, key=lambda run: run["total_s"])
    return {"cold_runs": runs, "fastest": {key: round(value, 3) for key, value in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1280)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: as the engine sets)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the fastest counts")
    parser.add_argument("--cold", type=int, default=0, help="measure N fresh processes instead of variants")
    parser.add_argument("--cold-run", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_run:
        print(json.dumps(cold_run(args.cold_run, args)))
    elif args.cold:
        print(json.dumps(compare_cold(args)))
    else:
        print(json.dumps(compare_variants(args)))


if __name__ == "__main__":
    main()
