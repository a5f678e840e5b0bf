"""A durable inbox between a chat platform's acknowledgement and the conversation layer.

Slack wants an answer within 3 seconds, but admission (prompt moderation) can take far longer when many prompts
arrive at once. So an adapter stores each request here and acknowledges as soon as `receive()` returns: the
request is then in the database (the `intake` table, storage/: it survives a crash or `kill -9` of the
process), and a task owned by the inbox hands it to the adapter's handler. Requests still unfinished when the
process stopped are handed over again on the next `open()`, flagged `replayed` when their handling had begun (the
handler checks whether it got as far as submitting a job).

Each request has a key (Slack's event id or trigger id): a key seen before is not stored again, which is how
platform retries and replays are recognised, across restarts too, for `retention_s`.

`Intake(database, platform, handler)` is given an open `storage.Database` (shared with the rest of the service)
and leaves closing it to its owner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from storage.database import Database
from storage.tables import intake

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)
RETENTION_S = 3600.0
"""Slack retries an unacknowledged event for about 5 minutes; keep keys an hour."""
INTAKE_KEY = "intake"
"""In a job's delivery context: the intake key (`IntakeEntry.key`) of the request that created it."""


class Deferred(Exception):
    """Raised by a handler that cannot take the request now (the service is stopping): it stays stored and is
    handed over again at the next `open()`."""


@dataclass(frozen=True)
class IntakeEntry:
    key: str
    kind: str
    payload: dict[str, Any]
    replayed: bool = False
    """Handling began before a restart: it may have got as far as submitting a job."""


Handler = Callable[[IntakeEntry], Awaitable[None]]


async def became_job(engine: Engine, platform: str, key: str) -> bool:
    """Did the request stored under `key` already get as far as a job (one the engine still follows or has yet to
    see delivered)? A handler asks this of a replayed entry, whose job carries the key under INTAKE_KEY."""
    requests = [job.request for job in engine.active_jobs(platform)]
    requests += [record.request for record in await engine.undelivered(platform)]
    return any(request.delivery.get(INTAKE_KEY) == key for request in requests)


class Intake:
    def __init__(
        self,
        database: Database,
        platform: str,
        handler: Handler,
        *,
        retention_s: float = RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._platform = platform
        self._handler = handler
        self._retention_s = retention_s
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._opened = False
        self._closed = False

    async def open(self) -> None:
        """Forget old keys, and hand over what a previous run left unfinished."""
        await self._forget_old_keys()
        pending = await self._pending()
        self._opened = True
        if pending:
            log.info("resuming %d %s request(s) received before the restart", len(pending), self._platform)
        for entry in pending:
            self._spawn(entry)

    async def receive(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        """Store a request durably and start handling it; False (and nothing done) for a key seen before."""
        if self._closed:
            raise RuntimeError("the intake is closed")
        if not self._opened:
            raise RuntimeError("the intake is not open")
        stored = await self._insert(f"{self._platform}:{key}", kind, json.dumps(payload))
        if stored:
            self._spawn(IntakeEntry(f"{self._platform}:{key}", kind, payload))
        return stored

    async def close(self) -> None:
        """Stop handling; unfinished requests stay stored for the next `open()`."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settled(self) -> None:
        """Wait until every request received so far has been handled (for tests and orderly shutdowns)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- handling ------------------------------------------------------------------------------------------

    def _spawn(self, entry: IntakeEntry) -> None:
        task = asyncio.create_task(self._handle(entry), name=f"intake-{entry.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry: IntakeEntry) -> None:
        await self._mark(entry.key, "started_at")
        try:
            await self._handler(entry)
        except asyncio.CancelledError:
            raise  # shutting down: stays pending, handed over again after the restart
        except Deferred:
            log.info("%s request %s deferred to the next start", self._platform, entry.key)
            return
        except Exception:  # the handler answers the user itself; a failure here must not retry forever
            log.exception("handling %s request %s failed", self._platform, entry.key)
        await self._mark(entry.key, "done_at")

    # ---- the intake table ----------------------------------------------------------------------------------

    async def _forget_old_keys(self) -> None:
        cutoff = self._clock() - self._retention_s
        await self._database.run(delete(intake).where(intake.c.done_at.is_not(None), intake.c.done_at < cutoff))

    async def _insert(self, key: str, kind: str, payload_json: str) -> bool:
        """Store unless the key is known: one statement, so two processes receiving one retry store it once."""
        statement = (
            self._database.insert(intake)
            .on_conflict_do_nothing(index_elements=[intake.c.key])
            .values(key=key, platform=self._platform, kind=kind, payload_json=payload_json, received_at=self._clock())
        )
        return await self._database.run(statement) == 1

    async def _mark(self, key: str, column: str) -> None:
        assert column in ("started_at", "done_at")
        await self._database.run(update(intake).where(intake.c.key == key).values({column: self._clock()}))

    async def _pending(self) -> list[IntakeEntry]:
        query = (
            select(intake.c.key, intake.c.kind, intake.c.payload_json, intake.c.started_at)
            .where(intake.c.platform == self._platform, intake.c.done_at.is_(None))
            .order_by(intake.c.received_at)
        )
        async with self._database.read() as db:
            rows = (await db.execute(query)).all()
        return [
            IntakeEntry(key, kind, json.loads(payload), started is not None) for key, kind, payload, started in rows
        ]
