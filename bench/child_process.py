"""Helpers shared by the benchmarks that drive a load generator in a child process."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Child:
    """A child process answering one JSON line per JSON line it is sent (the benchmark's load generator)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self, order: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())

    async def quit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b'{"quit": true}\n')
        await self.process.stdin.drain()
        await self.process.wait()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
