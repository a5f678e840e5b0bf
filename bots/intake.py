"""A durable inbox between a chat platform's acknowledgement and the conversation layer.

Slack wants an answer within 3 seconds, but admission (prompt moderation) can take far longer when many prompts
arrive at once. So an adapter stores each request here and acknowledges as soon as `receive()` returns: the
request is then on disk (SQLite in WAL mode: it survives a crash or `kill -9` of the process), and a task owned by
the inbox hands it to the adapter's handler. Requests still unfinished when the process stopped are handed over
again after the next start, flagged `replayed` when their handling had begun (the handler checks whether it got
as far as submitting a job).

Storing and handing over start separately, because a platform may deliver requests before its adapter can answer
them: `open()` makes the intake store requests (so an adapter opens it before connecting to its platform), and
`resume()` starts handing them to the handler: first what a previous run left unfinished, then what arrived
since `open()`, then each new request as it is stored. Call `resume()` once the handler can reply.

Each request has a key (Slack's event id or trigger id): a key seen before is not stored again, which is how
platform retries and replays are recognised, across restarts too, for `retention_s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bots.errors import Deferred
from engine.store import sqlite_path

log = logging.getLogger(__name__)
T = TypeVar("T")
RETENTION_S = 3600.0
"""Slack retries an unacknowledged event for about 5 minutes; keep keys an hour."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    done_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS intake_pending ON intake (platform, done_at);
"""


@dataclass(frozen=True)
class IntakeEntry:
    key: str
    kind: str
    payload: dict[str, Any]
    replayed: bool = False
    """Handling began before a restart: it may have got as far as submitting a job."""


Handler = Callable[[IntakeEntry], Awaitable[None]]


class Intake:
    def __init__(self, store_url: str, platform: str, handler: Handler, *, retention_s: float = RETENTION_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = sqlite_path(store_url)
        self._platform = platform
        self._handler = handler
        self._retention_s = retention_s
        self._clock = clock
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"intake-{platform}")
        self._db: sqlite3.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._waiting: list[IntakeEntry] | None = []
        """Stored but not handed over yet, oldest first: until `resume()`, after which this is None."""

    async def open(self) -> None:
        """Open the table and forget old keys; from now on `receive()` stores requests. What a previous run left
        unfinished is read now and handed over by `resume()`."""
        await self._run(self._connect)
        pending = await self._run(self._pending)
        if pending:
            log.info("%d %s request(s) received before the restart", len(pending), self._platform)
        self._waiting = pending  # read before any receive() could store one: oldest first

    async def resume(self) -> None:
        """Start handing requests to the handler: those left by a previous run, then those stored since
        `open()`, then every new one as `receive()` stores it. Calling it again does nothing."""
        if self._closed:  # closing already: what waits stays stored for the next start
            return
        if self._db is None:
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
        entry = IntakeEntry(f"{self._platform}:{key}", kind, payload)
        stored = await self._run(self._insert, entry.key, kind, json.dumps(payload))
        if not stored:
            return False
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
        await self._run(self._disconnect)
        await asyncio.to_thread(self._thread.shutdown, wait=True)

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
        await self._run(self._mark, entry.key, "started_at")
        try:
            await self._handler(entry)
        except asyncio.CancelledError:
            raise  # shutting down: stays pending, handed over again after the restart
        except Deferred:
            log.info("%s request %s deferred to the next start", self._platform, entry.key)
            return
        except Exception:  # the handler answers the user itself; a failure here must not retry forever
            log.exception("handling %s request %s failed", self._platform, entry.key)
        await self._run(self._mark, entry.key, "done_at")

    # ---- SQLite, in the intake's own thread ------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(Path(self._path).expanduser()) if self._path != ":memory:" else self._path,
                                   isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.execute("DELETE FROM intake WHERE done_at IS NOT NULL AND done_at < ?",
                         (self._clock() - self._retention_s,))

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the intake is not open")
        return self._db

    def _insert(self, key: str, kind: str, payload_json: str) -> bool:
        cursor = self._connection().execute(
            "INSERT OR IGNORE INTO intake (key, platform, kind, payload_json, received_at) VALUES (?, ?, ?, ?, ?)",
            (key, self._platform, kind, payload_json, self._clock()),
        )
        return cursor.rowcount == 1

    def _mark(self, key: str, column: str) -> None:
        assert column in ("started_at", "done_at")
        self._connection().execute(f"UPDATE intake SET {column} = ? WHERE key = ?", (self._clock(), key))

    def _pending(self) -> list[IntakeEntry]:
        rows = self._connection().execute(
            "SELECT key, kind, payload_json, started_at FROM intake WHERE platform = ? AND done_at IS NULL "
            "ORDER BY received_at", (self._platform,),
        ).fetchall()
        return [IntakeEntry(key, kind, json.loads(payload), started is not None)
                for key, kind, payload, started in rows]
