"""GroupCommit: the first write goes at once, what arrives meanwhile goes in the next one, each caller hears its
own result, and a failed write fails only its own callers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from storage.batch import GroupCommit

pytestmark = pytest.mark.timeout(30)


class Writes:
    """A write that takes until the test lets it finish (a real one awaits its driver: others submit meanwhile)."""

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_batch = fail_batch
        self.writing = asyncio.Event()
        self.finish = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.writing.set()
        await self.finish.wait()
        if len(self.batches) == self.fail_batch:
            raise OSError("disk full")
        return [item * 10 for item in items]


async def submit_during_first_write(group: GroupCommit[int, int], writes: Writes, count: int) -> list[object]:
    """Item 0 alone; items 1..count-1 while its write is in flight."""
    first = asyncio.create_task(group.submit(0))
    await writes.writing.wait()
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, count)]
    await asyncio.sleep(0)
    writes.finish.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


async def test_items_submitted_during_a_write_go_together_in_the_next() -> None:
    writes = Writes()
    group = GroupCommit(writes)
    results = await submit_during_first_write(group, writes, 5)
    await group.close()
    assert results == [0, 10, 20, 30, 40]
    assert writes.batches == [[0], [1, 2, 3, 4]]


async def test_a_failed_write_fails_its_callers_and_the_next_write_still_happens() -> None:
    writes = Writes(fail_batch=1)
    group = GroupCommit(writes)
    results = await submit_during_first_write(group, writes, 3)
    await group.close()
    assert isinstance(results[0], OSError) and results[1:] == [10, 20]


async def test_batches_are_capped() -> None:
    writes = Writes()
    group = GroupCommit(writes, max_batch=2)
    await submit_during_first_write(group, writes, 5)
    await group.close()
    assert writes.batches == [[0], [1, 2], [3, 4]]
