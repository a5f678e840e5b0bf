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

What stands between a request and its acknowledgement is one durable write, and nothing else may queue ahead of
it: requests arriving together are stored in one statement (storage/batch.py) on the database's `first=True`
connection, ahead of every other write waiting (storage/database.py); and an adapter acknowledges inside
`taking()`, which hands the request over only after the block, and while other requests are still being stored
and acknowledged, holds it back until they are (for at most `HANDOVER_HOLD_S`): a burst of commands is first
all acknowledged, then handled, rather than each acknowledgement waiting behind the admission of those before.
At most `MAX_HANDLING` requests are handled at once, oldest first, so that what does run beside an
acknowledgement is bounded too.

`Intake(database, platform, handler)` is given an open `storage.Database` (shared with the rest of the service)
and leaves closing it to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
HANDOVER_HOLD_S = 1.0
"""How long a stored request waits at most for other requests' acknowledgements before it is handled: under a
steady stream of commands there may never be a moment without one."""
MAX_HANDLING = 32
"""Requests handled at once at most (each one's admission and first reply). More would add nothing but turns of
the event loop taken from acknowledgements: the work is on the loop and the one database connection anyway."""


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
        self._taking = 0
        """Requests being stored and acknowledged (inside `taking()`) right now."""
        self._ready: deque[IntakeEntry] = deque()
        """Stored and acknowledged, not being handled yet, oldest first (see `_start_ready`)."""
        self._overdue = False
        """A request in `_ready` waited `HANDOVER_HOLD_S`: handle them even while others are being taken."""
        self._hold_timer: asyncio.TimerHandle | None = None
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
        self._ready.extend(waiting)
        self._start_ready()

    async def receive(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        """Store a request durably and hand it over (soon, or at `resume()`); False (and nothing done) for a
        key seen before."""
        async with self.taking(key, kind, payload) as stored:
            return stored

    @contextlib.asynccontextmanager
    async def taking(self, key: str, kind: str, payload: dict[str, Any]) -> AsyncIterator[bool]:
        """`receive()` for a request to acknowledge: yields once it is stored durably (True) or known already
        (False: nothing done); acknowledge it inside the block. It is handed over after the block, and not
        while other requests are still inside theirs (see the module's docstring)."""
        if self._closed:
            raise RuntimeError("the intake is closed")
        if not self._opened:
            raise RuntimeError("the intake is not open")
        entry = IntakeEntry(f"{self._platform}:{key}", kind, payload)
        self._taking += 1
        stored = False
        try:
            row = _Row(entry.key, kind, json.dumps(payload), self._clock())
            stored = await self._inserts.submit(row)
            if stored:
                self._backlog.inc()
            yield stored
        finally:
            self._taking -= 1
            if stored:
                self._hand_over(entry)
            else:
                self._start_ready()

    async def close(self) -> None:
        """Stop handling; unfinished requests stay stored for the next start."""
        self._closed = True
        self._stop_holding()
        self._ready.clear()  # stored: handed over after the next start
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._inserts.close()
        for marks in self._marks.values():
            await marks.close()

    async def settled(self) -> None:
        """Wait until every request handed over so far has been handled (for tests and orderly shutdowns)."""
        while (self._tasks or self._ready) and not self._closed:
            self._overdue = True  # no need to hold back what is waited for
            self._start_ready()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- handing over --------------------------------------------------------------------------------------

    def _hand_over(self, entry: IntakeEntry) -> None:
        if self._waiting is not None:  # resume() drains this list without awaiting: each entry is handed once
            self._waiting.append(entry)
            return
        self._ready.append(entry)
        self._start_ready()

    def _start_ready(self) -> None:
        """Start handling the oldest ready requests, up to `MAX_HANDLING` at once; while requests are being taken
        (stored and acknowledged), only once the hold is over."""
        while self._ready and len(self._tasks) < MAX_HANDLING and not self._closed:
            if self._taking and not self._overdue:
                if self._hold_timer is None:
                    self._hold_timer = asyncio.get_running_loop().call_later(HANDOVER_HOLD_S, self._hold_over)
                return
            self._spawn(self._ready.popleft())
        if not self._ready:
            self._stop_holding()

    def _hold_over(self) -> None:
        self._hold_timer = None
        self._overdue = True
        self._start_ready()

    def _stop_holding(self) -> None:
        self._overdue = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    # ---- handling ------------------------------------------------------------------------------------------

    def _spawn(self, entry: IntakeEntry) -> None:
        if self._closed:  # stored while closing: handed over after the next start
            return
        task = asyncio.create_task(self._handle(entry), name=f"intake-{entry.key}")
        self._tasks.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_ready()  # the next one's turn

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
            self._database.insert(intake).on_conflict_do_nothing(index_elements=[intake.c.key]).returning(intake.c.key)
        )
        # The rows as parameters, not as .values(rows): SQLAlchemy then compiles the statement once (cached) and
        # sends all rows in one INSERT ("insertmanyvalues"); compiling 500 rows' VALUES took ~100 ms of the loop.
        stored = {key for (key,) in await self._database.run_returning(statement, values, first=True)}
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
