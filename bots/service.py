"""The whole service in one process, started and stopped in order (`imagine serve`, the benchmarks, the test rigs).

One `storage.Database` (`store.url`) is shared by the job store, moderation and the adapters' intakes: built here,
connected first in start(), closed last in close(). The web server (bots/web/: /healthz, /readyz, /metrics) starts
before everything and closes after.
Start: web server → database (connect, migrate) → job queue (model load, journal replay) beside admission →
adapters (each opens its durable intake before it connects to its platform, and registers the platform with the
conversation), then the playground (bots/web/playground.py; its pages answer "starting" until then) →
conversation.start() (follow resumed jobs, deliver undelivered results, poll review decisions).
Stop: `drain()` finishes queued work and lets followers deliver (or hands back when hurried or out of time);
`close()` closes the rest in reverse order. Journaled work survives either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from bots.contract import Adapter
from bots.conversation import Conversation
from bots.web.app import body_limit, web_app
from bots.web.playground import Playground
from bots.web.server import WebServer
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
"""Without a timeout: how long deliveries of finished work may take at shutdown."""
CLOSE_RESERVE_S = 5.0
"""Of `service.shutdown_timeout_s`, what is kept for closing adapters, the queue and the database (at most a
third of it): queued work and deliveries get the rest."""


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


def local_queue(
    settings: Settings,
    store: JobStore,
    *,
    runner_factory: Callable[[], PipelineRunner] | None = None,
    screener: ImageScreener | None = None,
) -> LocalJobQueue:
    """The embedded mode's job queue: the GPU worker in this process (this is where torch is loaded)."""
    from engine.local import LocalJobQueue
    from moderation.images import output_screening

    screening = output_screening(settings.moderation) if screener is None else {"screener": screener}
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


def input_screening(settings: Settings) -> ImageScreener | None:
    """The screening of image prompts' pictures: the outputs' own (NudeNet), as `moderation.image_screening` asks."""
    from moderation.images import output_screening

    screener: ImageScreener | None = output_screening(settings.moderation).get("screener")
    return screener


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
        self._input_screener = screener if screener is not None else input_screening(settings)
        self._conversation_options = dict(conversation_options or {})
        self.conversation: Conversation | None = None
        self.adapters: list[Adapter] = []
        self._factories = list(configured_adapters(settings) if adapters is None else adapters)
        self.playground = Playground(settings) if settings.web.enabled and settings.web.playground else None
        self.web = WebServer(settings.web, self._web_app()) if settings.web.enabled else None
        self._serving = False

    def _web_app(self) -> web.Application:
        """Probes and pages on one application: every page mounts its routes before the server starts; the
        moderators' dashboard (/mod) reaches this service's parts when asked."""
        app = web_app(self.settings.web, self.readiness, max_body_bytes=body_limit(self.settings))
        if self.playground is not None:
            self.playground.mount(app)
        if self.settings.dashboard.enabled:
            from bots.web.mod import register_dashboard

            register_dashboard(app, self)
        return app

    async def start(self) -> None:
        """Start everything; after a failure, call close() (it closes what did start)."""
        await self.start_adapters()
        await self.resume()

    async def start_adapters(self) -> None:
        """The database, the job queue (model load, journal replay), admission, then every adapter (each opens
        its intake and registers its platform with the conversation)."""
        if self.web is not None:  # first: /healthz answers, and /readyz says why not yet, while the model loads
            await self.web.start()
        await self.database.connect()
        await self._start_engine_and_admission()
        self.conversation = Conversation(
            self.settings,
            self.engine,
            self.admission,
            database=self.database,
            input_screener=self._input_screener,
            **self._conversation_options,
        )
        for factory in self._factories:
            adapter = factory(self.settings, self.conversation, database=self.database)
            await adapter.start()
            self.adapters.append(adapter)
        if self.playground is not None:
            await self.playground.start(self.conversation)

    async def _start_engine_and_admission(self) -> None:
        """The model load and the moderation models' warm-up both take seconds off the event loop: side by side.
        An admission that opened is kept (close() closes it) even if the engine failed to start."""
        starts: list[Awaitable[Any]] = [self.engine.start()]
        if self._open_admission:
            starts.append(Admission.open(self.settings, database=self.database))
        results = await asyncio.gather(*starts, return_exceptions=True)
        if self._open_admission and isinstance(results[1], Admission):
            self.admission = results[1]
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def resume(self) -> None:
        """Follow resumed jobs, deliver undelivered results, poll review decisions (conversation.start)."""
        if self.conversation is None:
            raise RuntimeError("Service.start_adapters() first")
        await self.conversation.start()
        self._serving = True

    async def readiness(self) -> dict[str, bool]:
        """/readyz: the store answers, the queue can run work (bots/web/ops.py), and the service is serving."""
        checks = {"store": await self.database.ping()}
        checks |= await self.engine.readiness()
        checks["serving"] = self._serving
        return checks

    async def drain(self, hurry: asyncio.Event, timeout_s: float | None = None) -> None:
        """Finish queued work and deliver it; hand running jobs back instead once `hurry` is set or, with
        `timeout_s`, when finishing would not leave CLOSE_RESERVE_S for close() within it."""
        self._serving = False
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s - min(CLOSE_RESERVE_S, timeout_s / 3)
        draining = asyncio.create_task(self.engine.shutdown(drain=True))
        hurried = asyncio.create_task(hurry.wait())
        try:
            wait_s = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait({draining, hurried}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if not draining.done():
                await self.engine.shutdown(drain=False)
                log.info("running jobs handed back; they resume on the next start")
            await draining
        finally:
            hurried.cancel()
        if self.conversation is not None:
            left_s = DELIVERY_DRAIN_S if deadline is None else max(0.0, deadline - loop.time())
            await self.conversation.close(drain_timeout_s=left_s)

    async def close(self) -> None:
        """Adapters first (no new commands), then the conversation, then the job queue, which hands unfinished
        jobs back to its journal, then admission and the database."""
        if self.playground is not None:  # its open event streams would hold the web server's shutdown
            await self.playground.close()
        for adapter in reversed(self.adapters):
            await adapter.close()
        if self.conversation is not None:
            await self.conversation.close()
        await self.engine.shutdown(drain=False)
        if self.admission is not None:
            await self.admission.close()
        await self.database.close()
        if self.web is not None:
            await self.web.close()
