"""`Database`: one async SQLAlchemy engine for `store.url`, migrated on open, handing out transactions.

    database = await Database.open("sqlite:///var/imagine.db")      # or postgresql://user@host/db
    async with database.write() as connection:      # read-then-write steps: the write lock is taken at once
        await connection.execute(...)
    await database.run(update(...))                 # one INSERT/UPDATE/DELETE, atomic by itself: row count
    await database.run_returning(insert(...).returning(...))   # the same, with the rows RETURNING gives back
    await database.run_returning(statement, first=True)        # a write a user's acknowledgement waits on
    async with database.read() as connection: ...   # reads
    await database.close()

`Database(url)` only checks the URL (no I/O), so composition roots can build every store before anything
starts; `await database.connect()` (or `Database.open(url)`, both at once) connects and migrates.

SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout, so the serving process and tools such as
`imagine review` in another process share the file. SQLAlchemy takes over BEGIN from the driver (the recipe in
SQLAlchemy's SQLite dialect docs, "Serializable isolation / Savepoints / Transactional DDL"): `write()` begins
with BEGIN IMMEDIATE, so a transaction that reads and then writes cannot lose a race to another process
between the two. `run()` (one statement) and `read()` emit no BEGIN on SQLite: a single statement is its own
atomic transaction there, and every statement then sees the latest commits, as under PostgreSQL's default
READ COMMITTED. Each BEGIN costs a round trip to aiosqlite's thread, so this halves the cost of a small write.
Within one process, writers queue (`_WriteTurns`) rather than on SQLite's busy handler.

A write with `first=True` is one a chat platform's acknowledgement waits on (bots/intake.py): it has a connection
of its own, so it never waits behind reads or other writes for the pooled one, and on SQLite it takes the next
turn at the write lock, ahead of every ordinary writer already waiting. So what stands between a request and its
acknowledgement is that one write, plus at most the one write transaction in progress when it came. On SQLite
that connection is also a synchronous one on a thread of its own (storage/thread_writer.py: the whole statement
in one hop, where the async bridge takes some fifteen turns of a possibly busy event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Executable, Row, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage import migrate
from storage.errors import NotOpen, StorageError
from storage.thread_writer import ThreadWriter
from storage.urls import MEMORY, driver_url, is_sqlite

BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write lock before failing."""
WAL_SWITCH_RETRY_S = 0.01
BEGIN = "imagine_begin"
"""Execution option: how the connection's next transaction begins on SQLite (one of the two below)."""
IMMEDIATE, NO_BEGIN = "BEGIN IMMEDIATE", ""
FIRST_CONNECTIONS = 2
"""PostgreSQL connections kept for `first=True` writes (SQLite: one, as it admits one writer at a time)."""

Insert = sqlite.Insert | postgresql.Insert


class Database:
    def __init__(self, url: str) -> None:
        self._url = url  # kept private: a PostgreSQL URL may carry a password (messages use _safe_url)
        self._driver_url = driver_url(url)  # a bad URL fails here, with the value named
        self._engine: AsyncEngine | None = None
        self._first_engine: AsyncEngine | None = None
        """PostgreSQL: the connections of `first=True` writes."""
        self._first_thread: ThreadWriter | None = None
        """SQLite in a file: the connection and thread of `first=True` writes. (A second connection to an
        in-memory database would be a second, empty database: there they take the pooled one.)"""
        self._write_turns = _WriteTurns() if is_sqlite(url) else None

    @classmethod
    async def open(cls, url: str, *, migrate_schema: bool = True) -> Database:
        """Connect and bring the schema up to date (`migrate_schema=False`: use it as it is, e.g. read-only
        tools that must not change a database they only look into)."""
        database = cls(url)
        await database.connect(migrate_schema=migrate_schema)
        return database

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect: sqlite or postgresql."""
        return self._driver_url.get_backend_name()

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    async def connect(self, *, migrate_schema: bool = True) -> None:
        """Build the engine and migrate; idempotent. Raises StorageError when the database is unusable."""
        if self._engine is not None:
            return
        engine = self._build_engine()
        try:
            path = self._driver_url.database
            if is_sqlite(self._url) and path and path != MEMORY:
                await asyncio.to_thread(_switch_to_wal, path)
            if migrate_schema:
                async with engine.connect() as connection:
                    await connection.execution_options(**{BEGIN: IMMEDIATE})
                    async with connection.begin():
                        await connection.run_sync(migrate.upgrade)
        except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
            await engine.dispose()
            raise StorageError(f"cannot open the database at {self._safe_url()}: {exc}") from exc
        self._engine = engine
        if not is_sqlite(self._url):
            self._first_engine = self._build_engine(first=True)
        elif self._driver_url.database != MEMORY:
            self._first_thread = ThreadWriter(
                self._build_sync_engine(), name="first-writes", execution_options={BEGIN: NO_BEGIN}
            )

    async def close(self) -> None:
        first_engine, self._first_engine = self._first_engine, None
        first_thread, self._first_thread = self._first_thread, None
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()
        if first_engine is not None:
            await first_engine.dispose()
        if first_thread is not None:
            await first_thread.close()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for changes: committed on success, rolled back on error. On SQLite it holds the write
        lock from its first statement, so what it reads stays true until it commits."""
        async with self._writing(IMMEDIATE) as connection:
            yield connection

    async def run(self, statement: Executable, parameters: Any = None, *, first: bool = False) -> int:
        """One INSERT, UPDATE or DELETE on its own (atomic by itself); returns how many rows it changed.
        `first`: an acknowledgement waits on it (see the module's docstring)."""
        if first and self._first_thread is not None:
            changed = await self._on_first_thread(statement, parameters, returning=False)
            assert isinstance(changed, int)
            return changed
        async with self._writing(NO_BEGIN, first=first) as connection:
            return (await connection.execute(statement, parameters)).rowcount

    async def run_returning(
        self, statement: Executable, parameters: Any = None, *, first: bool = False
    ) -> list[Row[Any]]:
        """`run()` for a statement with RETURNING: the rows it returns (e.g. which of many inserted rows were
        new), in one round trip and atomic by itself."""
        if first and self._first_thread is not None:
            rows = await self._on_first_thread(statement, parameters, returning=True)
            assert isinstance(rows, list)
            return rows
        async with self._writing(NO_BEGIN, first=first) as connection:
            return list((await connection.execute(statement, parameters)).all())

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: each statement sees the latest commits (no snapshot across statements, as
        under READ COMMITTED); never waits for writers on SQLite in WAL mode."""
        async with self._transaction(NO_BEGIN) as connection:
            yield connection

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the database answers a trivial query within `timeout_s` (for /readyz); never raises."""
        if self._engine is None:
            return False
        try:
            async with asyncio.timeout(timeout_s), self.read() as db:
                await db.execute(text("SELECT 1"))
        except (TimeoutError, OSError, SQLAlchemyError, StorageError):
            return False
        return True

    async def serialize(self, connection: AsyncConnection, key: str) -> None:
        """Inside `write()`: wait until no other transaction serializing on `key` is open. SQLite needs nothing
        (BEGIN IMMEDIATE already admits one writer at a time); PostgreSQL takes a transaction advisory lock."""
        if self.dialect == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})

    def insert(self, table: Table) -> Insert:
        """An INSERT of this database's dialect, for `on_conflict_do_nothing()` / `on_conflict_do_update()`."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # ---- internals -----------------------------------------------------------------------------------------

    async def _on_first_thread(
        self, statement: Executable, parameters: Any, *, returning: bool
    ) -> int | list[Row[Any]]:
        assert self._first_thread is not None and self._write_turns is not None
        try:
            async with self._write_turns.turn(first=True):
                return await self._first_thread.run(statement, parameters, returning=returning)
        except SQLAlchemyError as exc:
            raise StorageError(f"database error ({self.dialect}): {exc}") from exc

    @contextlib.asynccontextmanager
    async def _writing(self, begin: str, *, first: bool = False) -> AsyncIterator[AsyncConnection]:
        if self._write_turns is None:
            async with self._transaction(begin, first=first) as connection:
                yield connection
            return
        # SQLite admits one writer at a time anyway: queueing our own writers here (first come, first served,
        # `first` writes ahead) spares them the busy handler's sleeps and keeps writes in the order they were
        # asked for. The turn is for both connections: they never wait on each other inside SQLite.
        async with self._write_turns.turn(first=first), self._transaction(begin, first=first) as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str, *, first: bool = False) -> AsyncIterator[AsyncConnection]:
        engine = self._first_engine if first and self._first_engine is not None else self._engine
        if engine is None:
            raise NotOpen(f"the database at {self._safe_url()} is not open")
        try:
            async with engine.connect() as connection:
                await connection.execution_options(**{BEGIN: begin})
                async with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:  # callers see one exception type, whichever driver raised
            raise StorageError(f"database error ({self.dialect}): {exc}") from exc

    def _build_engine(self, *, first: bool = False) -> AsyncEngine:
        """The engine of ordinary statements, or (`first`) that of `first=True` writes: on PostgreSQL two
        connections, so that two intakes (one per platform) writing at once do not wait for each other."""
        if not is_sqlite(self._url):
            sized = {"pool_size": FIRST_CONNECTIONS, "max_overflow": 0} if first else {}
            return create_async_engine(self._driver_url, pool_pre_ping=True, **sized)
        path = self._driver_url.database
        if path and path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Every transaction here ends in an explicit COMMIT or ROLLBACK: no reset when a connection goes back to
        # the pool (it would cost a round trip to the driver's thread each time). One connection per process:
        # statements then run in the order they were asked for (the pool hands its connection out first come,
        # first served), so a user's burst of prompts is admitted in the order it arrived; SQLite runs one
        # writer at a time anyway, and nothing here nests a second connection inside a transaction.
        engine = create_async_engine(
            self._driver_url,
            connect_args={"timeout": BUSY_TIMEOUT_S},
            pool_reset_on_return=None,
            pool_size=1,
            max_overflow=0,
            pool_timeout=BUSY_TIMEOUT_S,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connected)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine

    def _build_sync_engine(self) -> Engine:
        """SQLite through the standard library's driver, for `ThreadWriter` (one connection, one thread)."""
        engine = create_engine(
            self._driver_url.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_reset_on_return=None,
            pool_size=1,
            max_overflow=0,
        )
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "connect", _no_checkpoints_here)
        event.listen(engine, "begin", _sqlite_begin)
        return engine

    def _safe_url(self) -> str:
        return self._driver_url.render_as_string(hide_password=True)


class _WriteTurns:
    """One writer at a time within this process, in the order they asked; `first` writers go before every
    ordinary one still waiting (in their own order)."""

    def __init__(self) -> None:
        self._held = False
        self._first: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def turn(self, *, first: bool) -> AsyncIterator[None]:
        if self._held or self._first or self._ordinary:
            await self._wait(self._first if first else self._ordinary)
        else:
            self._held = True
        try:
            yield
        finally:
            self._pass_on()

    async def _wait(self, queue: deque[asyncio.Future[None]]) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed the turn just as it was cancelled: pass it on
                self._pass_on()
            elif waiter in queue:  # `_pass_on` may already have dropped it (it skips cancelled waiters)
                queue.remove(waiter)
            raise

    def _pass_on(self) -> None:
        """Hand the turn to the next waiter (it stays held), or free it."""
        for queue in (self._first, self._ordinary):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._held = False


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (below); the driver's own implicit BEGIN would be a deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # a no-op, needing no lock: `connect()` switched the file already
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _switch_to_wal(path: str) -> None:
    """Put the file in WAL mode (it stays so), in a thread of its own before any engine connects. Two processes
    opening one new file at once both ask for the switch, and SQLite answers one of them "database is locked" at
    once rather than through the busy handler: wait and ask again."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as connection:
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(WAL_SWITCH_RETRY_S)


def _no_checkpoints_here(dbapi_connection: Any, _record: Any) -> None:
    """The connection of `first=True` writes (what an acknowledgement waits on) never copies the WAL back into the
    database: SQLite does that (with an fsync) in whichever commit finds the WAL past 1,000 pages, and that commit
    would wait for it. The other connection, which every handled request writes through, still does."""
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_begin(connection: Any) -> None:
    begin = connection.get_execution_options().get(BEGIN, IMMEDIATE)  # unmarked: the safe choice
    if begin:  # NO_BEGIN: the driver runs the statement in autocommit mode; COMMIT is then a no-op
        connection.exec_driver_sql(begin)
