"""`ThreadWriter`: single statements run whole on a thread of their own, through SQLAlchemy's synchronous engine.

    writer = ThreadWriter(create_engine("sqlite:///imagine.db"), name="first-writes")
    rows = await writer.run(insert(...).returning(...), parameters, returning=True)
    await writer.close()

Why (storage/database.py uses it for SQLite's `first=True` writes, those an acknowledgement waits on): through
the async engine, one small INSERT is some fifteen turns of the event loop, one per step of SQLAlchemy's bridge to
aiosqlite's thread (checkout, cursor, execute, fetch, commit, ...). When the loop is busy with hundreds of
arriving requests each turn is long, and the acknowledgement waits for every one of them (measured: 150 ms for
one row while another task held the loop 10 ms per turn). Here the whole write is one job on the thread: one turn
to hand it over, one to hear back.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row


class ThreadWriter:
    def __init__(self, engine: Engine, *, name: str, execution_options: dict[str, Any] | None = None) -> None:
        """`engine`: used only from the writer's thread (its pool may hold one connection); `execution_options`
        for every statement's connection."""
        self._engine = engine
        self._options = execution_options or {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, statement: Executable, parameters: Any = None, *, returning: bool) -> int | list[Row[Any]]:
        """Run one statement in a transaction of its own, committed before this returns: the rows it returns
        (`returning`), else how many rows it changed. SQLAlchemy's errors propagate as they are."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._execute, statement, parameters, returning)

    async def close(self) -> None:
        """Close the connection (on the thread that used it), then end the thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._engine.dispose)
        finally:
            self._thread.shutdown(wait=False)  # idle by now: it ends at once

    def _execute(self, statement: Executable, parameters: Any, returning: bool) -> int | list[Row[Any]]:
        with self._engine.connect() as connection:
            connection = _with_options(connection, self._options)
            with connection.begin():
                result = connection.execute(statement, parameters)
                return list(result.all()) if returning else result.rowcount


def _with_options(connection: Connection, options: dict[str, Any]) -> Connection:
    return connection.execution_options(**options) if options else connection
