"""A durable inbox between a chat platform's acknowledgement and the conversation layer.

Slack wants an answer within 3 seconds, but admission (prompt moderation) can take far longer when many prompts
arrive at once. So an adapter stores each request here and acknowledges as soon as `receive()` returns: the
request is then in the database (the `intake` table, storage/: it survives a crash or `kill -9` of the
process), and a task owned by the inbox hands it to the adapter's handler. `open()` only makes the inbox store
requests (an adapter opens it before it connects to its platform, so nothing it acknowledges is lost);
`resume()` starts handing them over, once the adapter can answer: first what a previous run left unfinished
(flagged `replayed` when its handling had begun: the handler checks whether it got as far as submitting a job),
then what was stored since `open()`, then each new request as it is stored.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import delete, select, update

from bots import metrics
from bots.errors import Deferred
from storage.batch import GroupCommit
from storage.database import Database
from storage.tables import intake

log = logging.getLogger(__name__)
RETENTION_S = 3600.0
"""Slack retries an unacknowledged event for about 5 minutes; keep keys an hour."""


@dataclass(frozen=True)
class IntakeEntry:
    key: str
    kind: str
    payload: dict[str, Any]
    replayed: bool = False
    """Handling began before a restart: it may have got as far as submitting a job."""


Handler = Callable[[IntakeEntry], Awaitable[None]]


@dataclass(frozen=True)
class _Row:
    """One request to store."""

    key: str
    kind: str
    payload_json: str
    received_at: float


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
        self._backlog = metrics.INTAKE_BACKLOG.labels(platform)
        self._opened = False
        self._closed = False
        self._waiting: list[IntakeEntry] | None = []
        """Stored but not handed over yet, oldest first: until `resume()`, after which this is None."""
        # The write before an acknowledgement is the one that must be cheap: requests that arrive together are
        # stored in one statement (storage/batch.py), and so are the marks their handling leaves.
        self._inserts: GroupCommit[_Row, bool] = GroupCommit(self._insert_many)
        self._marks = {column: GroupCommit(partial(self._mark_many, column)) for column in ("started_at", "done_at")}

    async def open(self) -> None:
        """Forget old keys; from now on `receive()` stores requests. What a previous run left unfinished is read
        now and handed over by `resume()`."""
        await self._forget_old_keys()
        pending = await self._pending()
        if pending:
            log.info("%d %s request(s) received before the restart", len(pending), self._platform)
        self._waiting = pending  # read before any receive() could store one: oldest first
        self._backlog.inc(len(pending))
        self._opened = True

    async def resume(self) -> None:
        """Start handing requests to the handler: those left by a previous run, then those stored since
        `open()`, then every new one as `receive()` stores it. Calling it again does nothing."""
        if self._closed:  # closing already: what waits stays stored for the next start
            return
        if not self._opened:
            raise RuntimeError("open() the intake before resume()")
        waiting, self._waiting = self._waiting or [], None
        if waiting:
            log.info("handing over %d stored %s request(s)", len(waiting), self._platform)
        for entry in waiting:
            self._spawn(entry)

    async def receive(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        """Store a request durably and hand it over (at once, or at `resume()`); False (and nothing done) for a
        key seen before."""
        if self._closed:
            raise RuntimeError("the intake is closed")
        if not self._opened:
            raise RuntimeError("the intake is not open")
        entry = IntakeEntry(f"{self._platform}:{key}", kind, payload)
        if not await self._inserts.submit(_Row(entry.key, kind, json.dumps(payload), self._clock())):
            return False
        self._backlog.inc()
        if self._waiting is not None:  # resume() drains this list without awaiting: each entry is handed once
            self._waiting.append(entry)
        else:
            self._spawn(entry)
        return True

    async def close(self) -> None:
        """Stop handling; unfinished requests stay stored for the next start."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._inserts.close()
        for marks in self._marks.values():
            await marks.close()

    async def settled(self) -> None:
        """Wait until every request handed over so far has been handled (for tests and orderly shutdowns)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- handling ------------------------------------------------------------------------------------------

    def _spawn(self, entry: IntakeEntry) -> None:
        if self._closed:  # stored while closing: handed over after the next start
            return
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
        self._backlog.dec()

    # ---- the intake table ----------------------------------------------------------------------------------

    async def _forget_old_keys(self) -> None:
        cutoff = self._clock() - self._retention_s
        await self._database.run(delete(intake).where(intake.c.done_at.is_not(None), intake.c.done_at < cutoff))

    async def _insert_many(self, rows: Sequence[_Row]) -> list[bool]:
        """Store each row unless its key is known, all in one statement (so two processes receiving one retry
        store it once); True for each row stored now. A key twice in one batch: the first is the one stored."""
        values = [
            {"key": r.key, "platform": self._platform, "kind": r.kind, "payload_json": r.payload_json}
            | {"received_at": r.received_at}
            for r in rows
        ]
        statement = (
            self._database.insert(intake)
            .values(values)
            .on_conflict_do_nothing(index_elements=[intake.c.key])
            .returning(intake.c.key)
        )
        stored = {key for (key,) in await self._database.run_returning(statement)}
        new: list[bool] = []
        for row in rows:
            new.append(row.key in stored)
            stored.discard(row.key)  # the same key later in this batch was a duplicate
        return new

    async def _mark(self, key: str, column: str) -> None:
        await self._marks[column].submit(key)

    async def _mark_many(self, column: str, keys: Sequence[str]) -> list[None]:
        assert column in ("started_at", "done_at")
        await self._database.run(update(intake).where(intake.c.key.in_(keys)).values({column: self._clock()}))
        return [None] * len(keys)

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
