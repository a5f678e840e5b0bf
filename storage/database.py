"""`Database`: one async SQLAlchemy engine for `store.url`, migrated on open, handing out transactions.

    database = await Database.open("sqlite:///var/imagine.db")      # or postgresql://user@host/db
    async with database.write() as connection:      # read-then-write steps: the write lock is taken at once
        await connection.execute(...)
    await database.run(update(...))                 # one INSERT/UPDATE/DELETE, atomic by itself: row count
    await database.run_returning(insert(...).returning(...))   # the same, with the rows RETURNING gives back
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
Within one process, writers queue on an asyncio lock rather than on SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, Row, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage import migrate
from storage.errors import NotOpen, StorageError
from storage.urls import MEMORY, driver_url, is_sqlite

BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write lock before failing."""
BEGIN = "imagine_begin"
"""Execution option: how the connection's next transaction begins on SQLite (one of the two below)."""
IMMEDIATE, NO_BEGIN = "BEGIN IMMEDIATE", ""

Insert = sqlite.Insert | postgresql.Insert


class Database:
    def __init__(self, url: str) -> None:
        self._url = url  # kept private: a PostgreSQL URL may carry a password (messages use _safe_url)
        self._driver_url = driver_url(url)  # a bad URL fails here, with the value named
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock() if is_sqlite(url) else None

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
            if migrate_schema:
                async with engine.connect() as connection:
                    await connection.execution_options(**{BEGIN: IMMEDIATE})
                    async with connection.begin():
                        await connection.run_sync(migrate.upgrade)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StorageError(f"cannot open the database at {self._safe_url()}: {exc}") from exc
        self._engine = engine

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for changes: committed on success, rolled back on error. On SQLite it holds the write
        lock from its first statement, so what it reads stays true until it commits."""
        async with self._writing(IMMEDIATE) as connection:
            yield connection

    async def run(self, statement: Executable, parameters: Any = None) -> int:
        """One INSERT, UPDATE or DELETE on its own (atomic by itself); returns how many rows it changed."""
        async with self._writing(NO_BEGIN) as connection:
            return (await connection.execute(statement, parameters)).rowcount

    async def run_returning(self, statement: Executable, parameters: Any = None) -> list[Row[Any]]:
        """`run()` for a statement with RETURNING: the rows it returns (e.g. which of many inserted rows were
        new), in one round trip and atomic by itself."""
        async with self._writing(NO_BEGIN) as connection:
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

    @contextlib.asynccontextmanager
    async def _writing(self, begin: str) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._transaction(begin) as connection:
                yield connection
            return
        # SQLite admits one writer at a time anyway: queueing our own writers here (first come, first served)
        # spares them the busy handler's sleeps and keeps writes in the order they were asked for.
        async with self._write_lock, self._transaction(begin) as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[AsyncConnection]:
        if self._engine is None:
            raise NotOpen(f"the database at {self._safe_url()} is not open")
        try:
            async with self._engine.connect() as connection:
                await connection.execution_options(**{BEGIN: begin})
                async with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:  # callers see one exception type, whichever driver raised
            raise StorageError(f"database error ({self.dialect}): {exc}") from exc

    def _build_engine(self) -> AsyncEngine:
        if not is_sqlite(self._url):
            return create_async_engine(self._driver_url, pool_pre_ping=True)
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

    def _safe_url(self) -> str:
        return self._driver_url.render_as_string(hide_password=True)


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (below); the driver's own implicit BEGIN would be a deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    begin = connection.get_execution_options().get(BEGIN, IMMEDIATE)  # unmarked: the safe choice
    if begin:  # NO_BEGIN: the driver runs the statement in autocommit mode; COMMIT is then a no-op
        connection.exec_driver_sql(begin)
