"""The whole service in one process, started and stopped in order (`imagine serve`, and the benchmarks).

One `storage.Database` (`store.url`) is shared by the job store, moderation and the adapters' intakes: built here,
connected first in start(), closed last in close().
Start: database (connect, migrate) → engine (model load, journal replay) → admission → adapters (each registers
its platform with the conversation) → conversation.start() (follow resumed jobs, deliver undelivered results, poll
review decisions).
Stop: `drain()` finishes queued work and lets followers deliver (or hands back at once when hurried); `close()`
closes the rest in reverse order. Journaled work survives either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from bots.conversation import Conversation
from config.settings import Settings
from engine.engine import Engine
from engine.store import JobStore
from moderation.admission import Admission
from storage.database import Database

log = logging.getLogger(__name__)
DELIVERY_DRAIN_S = 60.0


class Adapter(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AdapterFactory(Protocol):
    def __call__(self, settings: Settings, conversation: Conversation, *, database: Database) -> Adapter: ...


def configured_adapters(settings: Settings) -> list[AdapterFactory]:
    """An adapter for every chat platform that has credentials."""
    factories: list[AdapterFactory] = []
    if settings.discord.token:
        from bots.discord_bot import DiscordAdapter

        factories.append(DiscordAdapter)
    if settings.slack.bot_token:
        from bots.slack_app import SlackAdapter

        factories.append(SlackAdapter)
    return factories


def image_screening(settings: Settings) -> dict[str, Any]:
    """The engine's output screening, as `moderation.image_screening` asks."""
    if not settings.moderation.image_screening:
        return {}
    from moderation.images import NudityScreener, withheld_version

    return {"screener": NudityScreener.from_settings(settings.moderation),
            "withhold": partial(withheld_version, mode=settings.moderation.withheld_image)}


class Service:
    def __init__(self, settings: Settings, adapters: Sequence[AdapterFactory] | None = None) -> None:
        self.settings = settings
        self.database = Database(settings.store.url)  # checks the URL only; connected in start()
        self.engine = Engine(settings, store=JobStore(self.database), **image_screening(settings))
        self.admission: Admission | None = None
        self.conversation: Conversation | None = None
        self.adapters: list[Adapter] = []
        self._factories = list(configured_adapters(settings) if adapters is None else adapters)

    async def start(self) -> None:
        """Start everything; after a failure, call close() (it closes what did start)."""
        await self.database.connect()
        await self.engine.start()
        self.admission = await Admission.open(self.settings, database=self.database)
        self.conversation = Conversation(self.settings, self.engine, self.admission)
        for factory in self._factories:
            adapter = factory(self.settings, self.conversation, database=self.database)
            await adapter.start()
            self.adapters.append(adapter)
        await self.conversation.start()

    async def drain(self, hurry: asyncio.Event) -> None:
        """Finish queued work and deliver it; if `hurry` is set meanwhile, hand running jobs back instead."""
        draining = asyncio.create_task(self.engine.shutdown(drain=True))
        hurried = asyncio.create_task(hurry.wait())
        try:
            await asyncio.wait({draining, hurried}, return_when=asyncio.FIRST_COMPLETED)
            if not draining.done():
                await self.engine.shutdown(drain=False)
                log.info("running jobs handed back; they resume on the next start")
            await draining
        finally:
            hurried.cancel()
        if self.conversation is not None:
            await self.conversation.close(drain_timeout_s=DELIVERY_DRAIN_S)

    async def close(self) -> None:
        if self.conversation is not None:
            await self.conversation.close()
        for adapter in reversed(self.adapters):
            await adapter.close()
        await self.engine.shutdown(drain=False)
        if self.admission is not None:
            await self.admission.close()
        await self.database.close()
