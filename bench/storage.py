"""Storage benchmark: the cost of a store write before storage/ (sqlite3 in a thread per store) and after
(SQLAlchemy Core on aiosqlite), measured in this process in alternating rounds.

    .venv/bin/python bench/storage.py                     # 300 writes per round, 5 rounds
    .venv/bin/python bench/storage.py --before 432d838    # the commit whose stores to compare against

The "before" stores are loaded from that commit with `git show` (engine/store.py and bots/intake.py as they
were). Each write is awaited before the next, as a single chat request or job does. Prints a table, then one JSON
line of ratios (after / before; absolute times on a shared machine are not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bots.intake import Intake, IntakeEntry  # noqa: E402
from engine.requests import GenerationRequest, JobState, Requester  # noqa: E402
from engine.store import JobRecord, JobStore  # noqa: E402
from storage.database import Database  # noqa: E402

BEFORE = "432d838"
"""The last commit before storage/ (main when the branch started)."""
REQUESTER = Requester(platform="bench", user_id="ann")


def load_before(rev: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """engine/store.py and bots/intake.py at `rev`, as modules (the intake's import of the store rewired)."""
    store_source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:engine/store.py"], check=True, capture_output=True, text=True
    ).stdout
    intake_source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:bots/intake.py"], check=True, capture_output=True, text=True
    ).stdout
    (folder / "before_store.py").write_text(store_source)
    rewired = intake_source.replace("from engine.store import", "from before_store import")
    (folder / "before_intake.py").write_text(rewired)
    sys.path.insert(0, str(folder))
    return _module("before_store", folder), _module("before_intake", folder)


def _module(name: str, folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def record(job_id: str) -> JobRecord:
    return JobRecord(
        id=job_id,
        request=GenerationRequest(prompt="a lighthouse at dawn", requester=REQUESTER),
        seeds=(1, 2, 3, 4),
        width=1280,
        height=1280,
        steps=30,
        state=JobState.QUEUED,
        created_at=time.time(),
    )


async def timed(writes: int, write: Callable[[int], Awaitable[Any]]) -> float:
    """Milliseconds per awaited write."""
    started = time.perf_counter()
    for i in range(writes):
        await write(i)
    return (time.perf_counter() - started) * 1000 / writes


async def nothing(entry: IntakeEntry) -> None:
    pass


async def round_before(modules: tuple[ModuleType, ModuleType], folder: Path, tag: str, writes: int) -> dict[str, float]:
    store_module, intake_module = modules
    url = f"sqlite:///{folder}/before-{tag}.db"
    store = store_module.SqliteJobStore(store_module.sqlite_path(url))
    thread = ThreadPoolExecutor(1)  # the engine ran the sync store in one dedicated thread; so does this
    loop = asyncio.get_running_loop()
    job_ms = await timed(writes, lambda i: loop.run_in_executor(thread, store.add, record(f"{tag}-{i}")))
    thread.shutdown()
    store.close()
    intake = intake_module.Intake(url, "bench", nothing)
    await intake.open()
    intake_ms = await timed(writes, lambda i: intake.receive(f"event:{tag}-{i}", "command", {"text": "a fox"}))
    await intake.settled()
    await intake.close()
    return {"job_add_ms": job_ms, "intake_receive_ms": intake_ms}


async def round_after(folder: Path, tag: str, writes: int) -> dict[str, float]:
    database = await Database.open(f"sqlite:///{folder}/after-{tag}.db")
    store = JobStore(database)
    job_ms = await timed(writes, lambda i: store.add(record(f"{tag}-{i}")))
    intake = Intake(database, "bench", nothing)
    await intake.open()
    intake_ms = await timed(writes, lambda i: intake.receive(f"event:{tag}-{i}", "command", {"text": "a fox"}))
    await intake.settled()
    await intake.close()
    await database.close()
    return {"job_add_ms": job_ms, "intake_receive_ms": intake_ms}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="the commit whose stores to compare against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagine-bench-storage-") as tmp:
        folder = Path(tmp)
        modules = load_before(args.before, folder)
        results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for n in range(args.rounds):  # alternating, so drift on a shared machine hits both alike
            results["before"].append(await round_before(modules, folder, str(n), args.writes))
            results["after"].append(await round_after(folder, str(n), args.writes))
    medians = {
        side: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} for side, rounds in results.items()
    }
    print(f"storage benchmark: {args.writes} awaited writes × {args.rounds} rounds, SQLite file, median ms per write")
    print(f"{'write':<20}{'before':>10}{'after':>10}{'ratio':>8}")
    ratios = {}
    for key in medians["before"]:
        ratios[key] = medians["after"][key] / medians["before"][key]
        print(f"{key:<20}{medians['before'][key]:>10.3f}{medians['after'][key]:>10.3f}{ratios[key]:>8.2f}")
    print(
        json.dumps(
            {
                "writes": args.writes,
                "rounds": args.rounds,
                "before": args.before,
                "ms": medians,
                "after_over_before": {k: round(v, 2) for k, v in ratios.items()},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
