"""`imagine worker`: the GPU process of the scale-out mode (`engine.queue = "redis"`), until SIGINT/SIGTERM.

It loads the model and takes jobs from Redis (engine/worker/remote.py); frontends (`imagine serve` with the same
`engine.redis_url` and `store.url`) queue them and deliver the results. Run one per GPU. On a signal it stops
taking jobs, finishes the ones it holds and sends their events; a second signal hands them back to Redis at once.
A worker killed outright loses nothing: its jobs are taken over by another worker after
`engine.reclaim_after_heartbeats` missed heartbeats. Like `imagine serve` it serves /healthz, /readyz and /metrics
on `web.host:web.port` (give each process on one host its own port).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from bots.errors import UsageError
from config.logs import apply_log_settings
from config.settings import Settings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="this worker's consumer name in Redis (default: host-pid-random)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    apply_log_settings(settings, verbose=args.verbose)
    if settings.engine.queue != "redis":
        raise UsageError('imagine worker needs engine.queue = "redis" (IMAGINE_ENGINE__QUEUE=redis) and a shared store')
    return asyncio.run(work(settings, consumer=args.name))


async def work(settings: Settings, stop: asyncio.Event | None = None, consumer: str | None = None) -> int:
    from redis.exceptions import RedisError

    from bots.web.ops import ops_app
    from bots.web.server import WebServer
    from engine import messages
    from engine.errors import QueueUnavailable
    from engine.redis_streams import redact
    from engine.worker.remote import RemoteWorker
    from moderation.images import output_screening

    worker = RemoteWorker(settings, consumer=consumer, **output_screening(settings.moderation))
    stop = stop or _stop_on_signals(worker.hand_back)
    web = WebServer(settings.web, ops_app(worker.readiness)) if settings.web.enabled else None
    try:
        if web is not None:  # /healthz, /readyz (model, Redis, heartbeat, progress) and /metrics
            await web.start()
        try:
            await worker.start()
        except (RedisError, OSError) as exc:
            where = f"Redis at {redact(settings.engine.redis_url)}: {exc}"
            raise QueueUnavailable(messages.QUEUE_UNAVAILABLE.format(error=where)) from exc
        log.info("imagine worker %s is taking jobs", worker.consumer)
        await worker.run(stop)
        log.info("worker %s stopped: every job it held is finished", worker.consumer)
    finally:
        await worker.close()
        if web is not None:
            await web.close()
    return 0


def _stop_on_signals(hand_back: Callable[[], None]) -> asyncio.Event:
    """The first SIGINT/SIGTERM sets the returned event (finish what is held, then stop); a second one hands the
    held jobs back to Redis at once (`RemoteWorker.hand_back`), for another worker to run."""
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            log.info("stopping: finishing the jobs this worker holds (signal again to hand them back at once)")
            stop.set()
        else:
            hand_back()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop
