"""`imagine serve`: the engine, admission and every chat adapter that has credentials, until SIGINT/SIGTERM.

The first signal stops taking work, drains the queue and lets deliveries finish, within
`service.shutdown_timeout_s`; a second signal, or that timeout, hands running jobs back to the journal (they
resume on the next start). See bots/service.py for the order of things.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from config.logs import apply_log_settings
from config.settings import Settings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    apply_log_settings(settings, verbose=args.verbose)
    return asyncio.run(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from bots.process_tuning import tune_for_serving
    from bots.service import Service

    stop = stop or _stop_on_signals()
    service = Service(settings)
    try:
        await service.start()
        tune_for_serving()
        if not service.adapters:
            log.warning("no chat platform has credentials (set IMAGINE_DISCORD__TOKEN or IMAGINE_SLACK__BOT_TOKEN)")
        names = [type(adapter).__name__ for adapter in service.adapters]
        names += ["the playground"] if service.playground is not None else []
        log.info("imagine is serving (%s)", ", ".join(names) or "no adapters")
        await stop.wait()
        stop.clear()
        log.info("shutting down: finishing queued work (signal again to stop at once)")
        await service.drain(hurry=stop, timeout_s=settings.service.shutdown_timeout_s)
    finally:
        await service.close()
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
