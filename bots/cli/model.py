"""`imagine model build-tiny [DIR]`: write the offline tiny model (random weights) and print its folder.
`imagine model build-random --arch sd15|sdxl DIR [--scale tiny|full]`: a pipeline with a real model's
architecture and random weights (engine/worker/random_model.py), for benchmarks and GPU sizing.

Without DIR build-tiny writes where `engine.model = "builtin:tiny"` looks for it: `<engine.cache_dir>/tiny-sd-v1`.
A complete tiny model already there is kept (building is deterministic, so it would be the same model).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bots.errors import UsageError
from config.settings import Settings

SCALES = {"full": 1, "tiny": 10}
"""Width divisors: `tiny` divides every width by 10 (same classes, block types and layer counts)."""


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    build = actions.add_parser("build-tiny", help="write the offline tiny model (random weights) and print its path")
    build.add_argument("dir", nargs="?", help="where to write it (default: <engine.cache_dir>/tiny-sd-v1)")
    build.set_defaults(func=run)
    random = actions.add_parser(
        "build-random", help="write a Stable Diffusion 1.5 or SDXL pipeline with random weights (for benchmarks)"
    )
    random.add_argument("--arch", required=True, choices=("sd15", "sdxl"), help="the architecture to copy")
    random.add_argument("--scale", choices=tuple(SCALES), default="full", help="full size (default) or tiny widths")
    random.add_argument("--width-divisor", type=int, help=argparse.SUPPRESS)  # any scale, for benchmarks
    random.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    random.add_argument("dir", help="a new or empty folder to write it to")
    random.set_defaults(func=run_random)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    from engine.worker.model import TINY_MODEL_FOLDER
    from engine.worker.tiny_model import build_tiny_model

    target = Path(args.dir) if args.dir else Path(settings_loader().engine.cache_dir) / TINY_MODEL_FOLDER
    try:
        folder = build_tiny_model(target.expanduser())
    except OSError as exc:  # an occupied or unwritable folder
        raise UsageError(f"cannot write the tiny model to {target}: {exc.strerror or exc}") from None
    print(folder)
    return 0


def run_random(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    divisor = args.width_divisor if args.width_divisor is not None else SCALES[args.scale]
    if divisor < 1:
        raise UsageError("--width-divisor must be 1 (full size) or more")
    target = Path(args.dir).expanduser()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise UsageError(f"cannot write the model to {args.dir}: it exists and is not an empty folder")
    from engine.worker.random_model import build_random_model

    try:
        report = build_random_model(target, args.arch, width_divisor=divisor, seed=args.seed)
    except OSError as exc:  # an unwritable folder, a full disk
        raise UsageError(f"cannot write the model to {args.dir}: {exc.strerror or exc}") from None
    parameters = ", ".join(f"{name} {count / 1e6:.1f}M" for name, count in report.parameters.items())
    print(report.folder)
    print(
        f"{args.arch} (widths / {divisor}): {parameters} parameters; "
        f"{report.bytes_on_disk / 2**20:.0f} MiB of float16 safetensors, built in {report.seconds:.1f} s"
    )
    return 0
