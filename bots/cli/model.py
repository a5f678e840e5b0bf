"""`imagine model build-tiny [DIR]`: write the offline tiny model (random weights) and print its folder.

Without DIR it goes where `engine.model = "builtin:tiny"` looks for it: `<engine.cache_dir>/tiny-sd-v1`.
A complete tiny model already there is kept (building is deterministic, so it would be the same model).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bots.errors import UsageError
from config.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    build = actions.add_parser("build-tiny", help="write the offline tiny model (random weights) and print its path")
    build.add_argument("dir", nargs="?", help="where to write it (default: <engine.cache_dir>/tiny-sd-v1)")
    build.set_defaults(func=run)


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
