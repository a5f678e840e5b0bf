"""`imagine serve`: the engine, admission and every chat adapter that has credentials, until SIGINT/SIGTERM.

Start order: engine (model load, journal replay) → admission → adapters (each registers its platform with the
conversation) → conversation.start() (follow resumed jobs, deliver undelivered results, poll review decisions).
Shutdown on the first signal: stop taking work, drain the queue, let followers deliver, close the adapters. A
second signal hands running jobs back to the journal at once; they resume on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from config.settings import Settings

log = logging.getLogger(__name__)
DELIVERY_DRAIN_S = 60.0


class Adapter(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the engine and every chat adapter that has credentials")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    return asyncio.run(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from bots.conversation import Conversation
    from engine.engine import Engine
    from moderation.admission import Admission

    stop = stop or _stop_on_signals()
    engine = Engine(settings, **_screening(settings))
    await engine.start()
    admission = await Admission.open(settings)
    conversation = Conversation(settings, engine, admission)
    adapters: list[Adapter] = []
    try:
        for adapter in _adapters(settings, conversation):
            await adapter.start()
            adapters.append(adapter)
        if not adapters:
            log.warning("no chat platform has credentials (set IMAGINE_DISCORD__TOKEN or IMAGINE_SLACK__BOT_TOKEN)")
        await conversation.start()
        log.info("imagine is serving (%s)", ", ".join(type(a).__name__ for a in adapters) or "no adapters")
        await stop.wait()
        stop.clear()
        log.info("shutting down: finishing queued work (signal again to stop at once)")
        draining = asyncio.create_task(engine.shutdown(drain=True))
        hurry = asyncio.create_task(stop.wait())
        await asyncio.wait({draining, hurry}, return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():
            await engine.shutdown(drain=False)  # hands running jobs back to the journal
            log.info("running jobs handed back; they resume on the next start")
        hurry.cancel()
        await draining
        await conversation.close(drain_timeout_s=DELIVERY_DRAIN_S)
    finally:
        await conversation.close()
        for adapter in reversed(adapters):
            await adapter.close()
        await engine.shutdown(drain=False)
        await admission.close()
    return 0


def _adapters(settings: Settings, conversation: Any) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.discord.token:
        from bots.discord_bot import DiscordAdapter

        adapters.append(DiscordAdapter(settings, conversation))
    if settings.slack.bot_token:
        from bots.slack_app import SlackAdapter

        adapters.append(SlackAdapter(settings, conversation))
    return adapters


def _screening(settings: Settings) -> dict[str, Any]:
    if not settings.moderation.image_screening:
        return {}
    from moderation.images import NudityScreener, withheld_version

    return {"screener": NudityScreener.from_settings(settings.moderation),
            "withhold": partial(withheld_version, mode=settings.moderation.withheld_image)}


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
