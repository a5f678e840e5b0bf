"""Waiting for a service under benchmark to go quiet, so that each batch of commands starts from the same state."""

from __future__ import annotations

import asyncio

from bots.service import Service

POLL_S = 0.2


async def engine_quiet(service: Service) -> None:
    """Until the engine has no job running or queued and every finished job is delivered. (The engine has no "all
    delivered" event to wait on; a benchmark may poll.)"""
    while await service.engine.active() or await service.engine.undelivered():  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
