"""`GroupCommit`: writes that arrive together go to the database together, in one statement or transaction.

    inserts = GroupCommit(write_many)          # write_many(items) -> one result per item, in order
    result = await inserts.submit(item)        # returns once the write holding `item` has committed
    await inserts.close()                      # waits for the write in flight

Under load most of a small write's cost is per write, not per row: a turn on the one connection, a trip to the
driver's thread, SQLAlchemy's compile and execute. So the first item is written at once (no waiting to fill a
batch: alone, nothing is slower than before), and whatever is submitted while that write is in flight goes in
the next one, all together. Each caller awaits its own item's result; nobody hears back before the write that
holds their item has committed, and a failed write fails every caller in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 500
"""Items per write at most: SQLite allows 32,766 bound parameters in one statement, PostgreSQL 65,535."""


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self, write_many: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *, max_batch: int = MAX_BATCH
    ) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(), name="group-commit")
        return await future

    async def close(self) -> None:
        """Wait until everything submitted so far is written (or has failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write_many([item for item, _ in batch])
        except Exception as exc:  # every caller in this write hears of it; later batches still get their turn
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): the callers must not wait forever
            for _, future in batch + self._pending:
                future.cancel()
            self._pending = []
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a caller that gave up: its item is written all the same
                future.set_result(result)
