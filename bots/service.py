"""The whole service in one process, started and stopped in order (`imagine serve`, and the benchmarks).

Start: engine (model load, journal replay) → admission → adapters (each opens its durable intake before it
connects to its platform, and registers the platform with the conversation) → conversation.start() (follow
resumed jobs, deliver undelivered results, poll review decisions).
Stop: `drain()` finishes queued work and lets followers deliver (or hands back at once when hurried); `close()`
closes the rest in reverse order. Journaled work survives either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from bots.contract import Adapter
from bots.conversation import Conversation
from config.settings import Settings
from moderation.admission import Admission

if TYPE_CHECKING:
    from engine.local import LocalJobQueue

log = logging.getLogger(__name__)
DELIVERY_DRAIN_S = 60.0


AdapterFactory = Callable[[Settings, Conversation], Adapter]


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

    return {"screener": NudityScreener.from_settings(settings.moderation),
            "withhold": partial(withheld_version, mode=settings.moderation.withheld_image)}


def local_queue(settings: Settings) -> LocalJobQueue:
    """The embedded mode's job queue: the GPU worker in this process (this is where torch is loaded)."""
    from engine.local import LocalJobQueue

    return LocalJobQueue(settings, **image_screening(settings))


OPEN_ADMISSION = "open"
"""Service(admission=OPEN_ADMISSION): open the configured admission (limits, moderation, review) at start."""


class Service:
    """The composition root. Tests build it with their own job queue, admission or adapter factories, so the
    rigs start exactly what `imagine serve` starts, in the same order."""

    def __init__(
        self,
        settings: Settings,
        adapters: Sequence[AdapterFactory] | None = None,
        *,
        jobs: LocalJobQueue | None = None,
        admission: Admission | None | str = OPEN_ADMISSION,
        conversation_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = jobs or local_queue(settings)
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
        """The job queue (model load, journal replay), admission, then every adapter (each registers its
        platform with the conversation and opens its intake)."""
        await self.engine.start()
        if self._open_admission:
            self.admission = await Admission.open(self.settings)
        self.conversation = Conversation(self.settings, self.engine, self.admission, **self._conversation_options)
        for factory in self._factories:
            adapter = factory(self.settings, self.conversation)
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
        jobs back to its journal, then admission."""
        for adapter in reversed(self.adapters):
            await adapter.close()
        if self.conversation is not None:
            await self.conversation.close()
        await self.engine.shutdown(drain=False)
        if self.admission is not None:
            await self.admission.close()
