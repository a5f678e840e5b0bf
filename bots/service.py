"""The whole service in one process, started and stopped in order (`imagine serve`, the benchmarks, the test rigs).

One `storage.Database` (`store.url`) is shared by the job store, moderation and the adapters' intakes: built here,
connected first in start(), closed last in close().
Start: database (connect, migrate) → job queue (model load, journal replay) → admission → adapters (each opens its
durable intake before it connects to its platform, and registers the platform with the conversation) →
conversation.start() (follow resumed jobs, deliver undelivered results, poll review decisions).
Stop: `drain()` finishes queued work and lets followers deliver (or hands back at once when hurried); `close()`
closes the rest in reverse order. Journaled work survives either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from bots.contract import Adapter
from bots.conversation import Conversation
from config.settings import Settings
from engine.screening import ImageScreener
from engine.store import JobStore
from moderation.admission import Admission
from storage.database import Database

if TYPE_CHECKING:
    from engine.local import LocalJobQueue
    from engine.redis_streams import RedisJobQueue
    from engine.worker.runner import PipelineRunner

log = logging.getLogger(__name__)
DELIVERY_DRAIN_S = 60.0


class AdapterFactory(Protocol):
    def __call__(self, settings: Settings, conversation: Conversation, *, database: Database) -> Adapter: ...


def configured_adapters(settings: Settings) -> list[AdapterFactory]:
    """An adapter for every chat platform that has credentials."""
    factories: list[AdapterFactory] = []
    if settings.discord.token:
        from bots.discord.adapter import DiscordAdapter

        factories.append(DiscordAdapter)
    if settings.slack.bot_token:
        from bots.slack.adapter import SlackAdapter

        factories.append(SlackAdapter)
    return factories


def image_screening(settings: Settings) -> dict[str, Any]:
    """The engine's output screening, as `moderation.image_screening` asks."""
    if not settings.moderation.image_screening:
        return {}
    from moderation.images import NudityScreener, withheld_version

    return {
        "screener": NudityScreener.from_settings(settings.moderation),
        "withhold": partial(withheld_version, mode=settings.moderation.withheld_image),
    }


def local_queue(
    settings: Settings,
    store: JobStore,
    *,
    runner_factory: Callable[[], PipelineRunner] | None = None,
    screener: ImageScreener | None = None,
) -> LocalJobQueue:
    """The embedded mode's job queue: the GPU worker in this process (this is where torch is loaded)."""
    from engine.local import LocalJobQueue

    screening = image_screening(settings) if screener is None else {"screener": screener}
    return LocalJobQueue(settings, store=store, runner_factory=runner_factory, **screening)


def build_queue(
    settings: Settings,
    store: JobStore,
    *,
    runner_factory: Callable[[], PipelineRunner] | None = None,
    screener: ImageScreener | None = None,
) -> LocalJobQueue | RedisJobQueue:
    """`engine.queue`: "memory" (the GPU worker in this process) or "redis" (scale-out: this process is a
    frontend; `imagine worker` processes elsewhere render, and this one loads no model)."""
    if settings.engine.queue == "redis":
        from engine.redis_streams import RedisJobQueue

        return RedisJobQueue(settings, store=store)
    return local_queue(settings, store, runner_factory=runner_factory, screener=screener)


OPEN_ADMISSION = "open"
"""Service(admission=OPEN_ADMISSION): open the configured admission (limits, moderation, review) at start."""


class Service:
    """The composition root. Tests build it with their own pipeline runner, screener, admission, conversation
    timings or adapter factories, so the rigs start exactly what `imagine serve` starts, in the same order."""

    def __init__(
        self,
        settings: Settings,
        adapters: Sequence[AdapterFactory] | None = None,
        *,
        runner_factory: Callable[[], PipelineRunner] | None = None,
        screener: ImageScreener | None = None,
        admission: Admission | None | str = OPEN_ADMISSION,
        conversation_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.database = Database(settings.store.url)  # checks the URL only; connected in start()
        self.engine = build_queue(settings, JobStore(self.database), runner_factory=runner_factory, screener=screener)
        self.admission: Admission | None = None if isinstance(admission, str) else admission
        self._open_admission = admission == OPEN_ADMISSION
        self._conversation_options = dict(conversation_options or {})
        self.conversation: Conversation | None = None
        self.adapters: list[Adapter] = []
        self._factories = list(configured_adapters(settings) if adapters is None else adapters)

    async def start(self) -> None:
        """Start everything; after a failure, call close() (it closes what did start)."""
        await self.start_adapters()
        await self.resume()

    async def start_adapters(self) -> None:
        """The database, the job queue (model load, journal replay), admission, then every adapter (each opens
        its intake and registers its platform with the conversation)."""
        await self.database.connect()
        await self.engine.start()
        if self._open_admission:
            self.admission = await Admission.open(self.settings, database=self.database)
        self.conversation = Conversation(self.settings, self.engine, self.admission, **self._conversation_options)
        for factory in self._factories:
            adapter = factory(self.settings, self.conversation, database=self.database)
            await adapter.start()
            self.adapters.append(adapter)

    async def resume(self) -> None:
        """Follow resumed jobs, deliver undelivered results, poll review decisions (conversation.start)."""
        if self.conversation is None:
            raise RuntimeError("Service.start_adapters() first")
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
        """Adapters first (no new commands), then the conversation, then the job queue, which hands unfinished
        jobs back to its journal, then admission and the database."""
        for adapter in reversed(self.adapters):
            await adapter.close()
        if self.conversation is not None:
            await self.conversation.close()
        await self.engine.shutdown(drain=False)
        if self.admission is not None:
            await self.admission.close()
        await self.database.close()
