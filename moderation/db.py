"""The moderation tables (review queue, audit log, strikes, bans) in the job store's database.

`ModerationDatabase(settings.store.url)` opens its own connection to the same SQLite file the job store uses
(WAL mode, so the engine, the serving process and `imagine review` in another process can share it) and runs
every call in one dedicated worker thread: the event loop never waits on SQLite. The schema uses plain
portable types (TEXT, INTEGER, DOUBLE PRECISION; no AUTOINCREMENT, no SQLite-only types) so that a PostgreSQL
implementation can follow with the scale-out mode. Times are Unix seconds (UTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engine.store import sqlite_path

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_items (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    platform TEXT NOT NULL,
    state TEXT NOT NULL,
    request_json TEXT NOT NULL,
    verdict_json TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    decided_by TEXT,
    decided_at DOUBLE PRECISION,
    decision_reason TEXT,
    claim_token TEXT,
    claimed_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS review_items_state ON review_items (state, claim_token);
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, created_at);
CREATE TABLE IF NOT EXISTS strikes (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    category TEXT NOT NULL,
    reason TEXT NOT NULL,
    cleared_at DOUBLE PRECISION,
    cleared_by TEXT
);
CREATE INDEX IF NOT EXISTS strikes_user ON strikes (user_key, created_at);
CREATE TABLE IF NOT EXISTS bans (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    pending_review INTEGER NOT NULL,
    lifted_at DOUBLE PRECISION,
    lifted_by TEXT
);
CREATE INDEX IF NOT EXISTS bans_user ON bans (user_key, lifted_at);
"""


class ModerationDatabase:
    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.path = sqlite_path(url)
        self.clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect and create the tables if missing; idempotent."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderation-db")
            await self._submit(self._connect)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(connection, *args)` in the database thread."""
        if self._executor is None:
            await self.open()
        return await self._submit(self._call, function, *args)

    async def close(self) -> None:
        if self._executor is not None:
            await self._submit(self._disconnect)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _submit(self, function: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        assert self._connection is not None
        return function(self._connection, *args)

    def _connect(self) -> None:
        path = self.path
        if path != ":memory:":
            resolved = Path(path).expanduser()
            resolved.parent.mkdir(parents=True, exist_ok=True)
            path = str(resolved)
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        self._connection = connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock at once, so read-then-write steps are atomic across
    processes; committed on success, rolled back on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def new_id(nbytes: int = 5) -> str:
    """A short random id (10 hex characters by default) that moderators can type."""
    return secrets.token_hex(nbytes)


def ordered_id() -> str:
    """An id that sorts by creation time (for the append-only audit log)."""
    return f"{time.time_ns():020d}-{secrets.token_hex(3)}"
