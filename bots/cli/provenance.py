"""`imagine provenance make-dev-cert [DIR]`: write a development C2PA signing pair (a CA and a signing certificate
chain, and its key) and print how to configure it.

Without DIR it goes where the service looks when `provenance.c2pa_cert` is empty: `<engine.cache_dir>/c2pa`.
Such a certificate makes manifests verifiable, not trusted: for production, configure a chain from a CA that
verifiers trust (README, "Content Credentials"). The key is written with mode 0600 and never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bots.cli import EXIT_OK
from bots.errors import UsageError
from config.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    make = actions.add_parser(
        "make-dev-cert", help="write a development C2PA signing certificate chain and key, and print their paths"
    )
    make.add_argument("dir", nargs="?", help="where to write them (default: <engine.cache_dir>/c2pa)")
    make.add_argument("--force", action="store_true", help="replace a pair already there")
    make.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    from engine.provenance.c2pa_manifest import DEV_DIRECTORY, make_dev_certificate

    target = Path(args.dir) if args.dir else Path(settings_loader().engine.cache_dir) / DEV_DIRECTORY
    try:
        chain, key = make_dev_certificate(target, overwrite=args.force)
    except FileExistsError:
        raise UsageError(f"a signing pair already exists in {target}: pass --force to replace it") from None
    except OSError as exc:
        raise UsageError(f"cannot write the signing pair to {target}: {exc.strerror or exc}") from None
    print(f"certificate chain: {chain}")
    print(f"private key:       {key} (mode 0600)")
    print("to sign with them, put in your config file:")
    print(f'  [provenance]\n  c2pa_cert = "{chain}"\n  c2pa_key = "{key}"')
    return EXIT_OK
