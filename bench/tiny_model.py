"""How fast is the tiny model? 4 images at 1280x1280, 4 steps, classifier-free guidance, on this machine.

Builds each architecture variant into a temporary folder, loads it with `engine.model.load_model` (so the
engine's own tuning applies) and times one pipeline call, split into UNet and VAE-decoder time with forward
hooks. The first variant is the baseline of the ratios (the sizes a first spike used). One process; the machine
may be shared, so read the ratios rather than the seconds.

    .venv/bin/python bench/tiny_model.py [--size 1280] [--images 4] [--steps 4] [--variants all|chosen]

Last line: one JSON object with every variant's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config.settings import EngineSettings  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.tiny_model import TINY_ARCHITECTURE, TinyArchitecture, build_tiny_model  # noqa: E402

IMPORT_S = time.perf_counter() - T0
PROMPT = "a lighthouse at dawn, oil painting"



def _variant(unet: tuple[int, ...], vae: tuple[int, int, int, int]) -> TinyArchitecture:
    return replace(TINY_ARCHITECTURE, unet_channels=unet, vae_channels=vae)


VARIANTS: dict[str, TinyArchitecture] = {
    "spike: unet (32,64,64), vae (32,64,64,64)": _variant((32, 64, 64), (32, 64, 64, 64)),
    "unet (32,64,64), vae (8,16,32,32)": _variant((32, 64, 64), (8, 16, 32, 32)),
    "unet (16,32,64), vae (8,16,32,32)": _variant((16, 32, 64), (8, 16, 32, 32)),
    "unet (16,32,64,64), vae (8,16,32,32)": _variant((16, 32, 64, 64), (8, 16, 32, 32)),
    "unet (16,32,64), vae (4,8,16,32)": _variant((16, 32, 64), (4, 8, 16, 32)),
    "unet (16,32,64,64), vae (4,8,16,32)": _variant((16, 32, 64, 64), (4, 8, 16, 32)),
    "unet (16,32,32,64), vae (4,8,16,32)": _variant((16, 32, 32, 64), (4, 8, 16, 32)),
    "chosen (TINY_ARCHITECTURE)": TINY_ARCHITECTURE,
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


def measure(architecture: TinyArchitecture, args: argparse.Namespace, slicing: bool = True) -> Timing:
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_tiny_model(Path(scratch) / "model", architecture)
        timing = Timing()
        started = time.perf_counter()
        loaded = load_model(EngineSettings(model=str(folder), device="cpu"))
        timing.load_s = time.perf_counter() - started
    pipe = loaded.pipeline
    if args.threads:
        torch.set_num_threads(args.threads)
    if not slicing:
        pipe.vae.disable_slicing()
    pipe(PROMPT, height=64, width=64, num_inference_steps=1)  # one-time kernel set-up, as a warm service has
    best = None
    for _ in range(args.repeat):  # the best of a few runs: other load on the machine only ever adds time
        run = Timing(load_s=timing.load_s)
        hooks = [*_time_module(pipe.unet, run, "unet_s"), *_time_module(pipe.vae.decoder, run, "vae_s")]
        started, started_cpu = time.perf_counter(), time.process_time()
        images = pipe(
            PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
            num_images_per_prompt=args.images, guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
        ).images
        run.total_s, run.cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
        for hook in hooks:
            hook.remove()
        assert len(images) == args.images and images[0].size == (args.size, args.size)
        best = run if best is None or run.total_s < best.total_s else best
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1280)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", choices=("all", "chosen"), default="all")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: as the engine sets)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the fastest counts")
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else [next(iter(VARIANTS)), "chosen (TINY_ARCHITECTURE)"]
    runs = [(name, VARIANTS[name], True) for name in names]
    runs.append(("chosen, vae slicing off", TINY_ARCHITECTURE, False))
    print(f"threads={args.threads or 'engine default'} repeat={args.repeat} imports={IMPORT_S:.2f}s "
          f"{args.images}x{args.size}² {args.steps} steps, CFG on")
    print(f"{'variant':44} {'unet s':>7} {'vae s':>7} {'total s':>8} {'cpu s':>7} {'load s':>7} {'vs base':>8}")
    results = {}
    for name, architecture, slicing in runs:
        timing = measure(architecture, args, slicing)
        results[name] = timing
        ratio = timing.total_s / results[names[0]].total_s
        print(f"{name:44} {timing.unet_s:7.2f} {timing.vae_s:7.2f} {timing.total_s:8.2f} {timing.cpu_s:7.2f} "
              f"{timing.load_s:7.2f} "
              f"{ratio:8.2f}", flush=True)
    print(json.dumps({"imports_s": round(IMPORT_S, 2), **{
        name: {k: round(v, 3) for k, v in vars(t).items()} for name, t in results.items()}}))


if __name__ == "__main__":
    main()
