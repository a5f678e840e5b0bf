"""The `imagine` command line (also `python -m bots`). Bad input exits 2 with one clear line, no traceback.

One module per subcommand in this package; each exposes `configure(parser)`, setting `func` on the parser, and
`func(args, settings_loader) -> int` returns the exit code. Only the module of the subcommand being run is
imported (the others appear in `--help` by name), so `imagine review list` never loads the model's libraries.
Settings are loaded lazily through `settings_loader()` so that commands needing none stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from bots.errors import AdapterStartError, UsageError
from config.settings import ConfigError, Settings, load_settings
from engine.errors import EngineError

COMMANDS = {  # in help order; each lives in bots/cli/<name>.py
    "generate": "render four images for a prompt and write them as JPEGs",
    "verify": "check images for the invisible watermark, the C2PA manifest and AI metadata",
    "provenance": "manage Content Credentials (C2PA) signing",
    "moderate": "show the moderation verdict for a prompt (or - for stdin)",
    "review": "moderators: review queue, bans, strikes and audit log",
    "mod": "moderators: local accounts for the dashboard at /mod",
    "serve": "run the engine and every chat adapter that has credentials",
    "worker": "scale-out: the GPU process taking jobs from Redis (engine.queue = redis)",
    "model": "manage the diffusion model",
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's default prints usage; one clear line is enough
        raise UsageError(f"{self.prog}: {message}")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the full arguments of the subcommand named in `argv` (every one when none is named)."""
    parser = _Parser(prog="imagine", description="Text-to-image generation for chat.")
    parser.add_argument("--config", help="a TOML file overriding config/default.toml (or set IMAGINE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    chosen = next((word for word in argv if word in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        command = subparsers.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:])
        if chosen is None or name == chosen:
            importlib.import_module(f"bots.cli.{name}").configure(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _prepare_process_environment()
    try:
        words = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(words).parse_args(words)
        # One-shot commands print results, not logs; the long-running server logs what it does.
        quiet = logging.INFO if args.command in ("serve", "worker") else logging.WARNING
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else quiet,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if not args.verbose:  # Alembic narrates every start (plugins, dialect): our migrate module logs changes
            logging.getLogger("alembic").setLevel(logging.WARNING)
        return int(args.func(args, _settings_loader(args.config)))
    except (UsageError, ConfigError, AdapterStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


PROCESS_ENVIRONMENT = (
    # transformers and diffusers print import-time notices (e.g. that torchvision is absent) and progress bars
    # that mean nothing to a user; our own logging says what happens.
    ("TRANSFORMERS_VERBOSITY", "error"),
    ("DIFFUSERS_VERBOSITY", "error"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    # OpenMP threads that spin while waiting cost the embedding model ~8x the CPU per verdict on a busy machine
    # (measured: 242 vs 28 ms); it must be set before torch loads.
    ("OMP_WAIT_POLICY", "PASSIVE"),
)


def _prepare_process_environment() -> None:
    """Settings that must exist before torch and friends are imported; an explicit environment still wins."""
    for name, value in PROCESS_ENVIRONMENT:
        os.environ.setdefault(name, value)


def _settings_loader(path: str | None) -> Callable[[], Settings]:
    cache: list[Settings] = []

    def load() -> Settings:
        if not cache:
            cache.append(load_settings(path))
        return cache[0]

    return load
