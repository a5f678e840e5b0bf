"""Background work the conversation owns: every task is tracked, logged when it fails and cancelled on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

from engine.errors import EngineError

log = logging.getLogger(__name__)


async def logged(awaitable: Awaitable[Any], what: str) -> Any:
    """Run a background step; log a failure instead of letting it vanish or crash a shared task."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        raise
    except EngineError as exc:
        log.warning("%s: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)
    return None


class OwnedTasks:
    """Followers and deliveries (which end), and pollers (which run until closed)."""

    def __init__(self) -> None:
        self._work: set[asyncio.Task[Any]] = set()
        self._pollers: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self._track(coroutine, name, self._work)

    def spawn_poller(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self._track(coroutine, name, self._pollers)

    async def settled(self) -> None:
        """Until every follower and delivery started so far (and any they started) has ended."""
        while self._work:
            await asyncio.gather(*list(self._work), return_exceptions=True)

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop the pollers; give the rest up to `drain_timeout_s`; cancel what is left."""
        for task in self._pollers:
            task.cancel()
        if self._work and drain_timeout_s > 0:
            await asyncio.wait(set(self._work), timeout=drain_timeout_s)
        every = self._work | self._pollers
        for task in every:
            task.cancel()
        if every:
            await asyncio.gather(*every, return_exceptions=True)

    @staticmethod
    def _track(coroutine: Coroutine[Any, Any, Any], name: str, tasks: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
        task = asyncio.create_task(logged(coroutine, name), name=name)
        tasks.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            tasks.discard(done)
            coroutine.close()  # a task cancelled before it ever ran would leave `coroutine` never awaited

        task.add_done_callback(forget)
        return task
