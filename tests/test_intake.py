"""The durable intake: stored before acknowledged, handled once, resumed after a restart, repeats ignored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bots import intake as intake_module
from bots.errors import Deferred
from bots.intake import Intake, IntakeEntry
from storage.database import Database

pytestmark = pytest.mark.timeout(60)


Opener = Callable[[], Awaitable[Database]]


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the database as a new process would (one Database each); closes them all at the end."""
    opened: list[Database] = []

    async def open_database() -> Database:
        opened.append(await Database.open(f"sqlite:///{tmp_path}/db.sqlite"))
        return opened[-1]

    yield open_database
    for database in opened:
        await database.close()


class Recorder:
    def __init__(self) -> None:
        self.entries: list[IntakeEntry] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False

    async def __call__(self, entry: IntakeEntry) -> None:
        self.entered.set()
        if self.hold:
            await self.release.wait()
        self.entries.append(entry)


async def test_each_key_is_handled_once(process: Opener) -> None:
    handler = Recorder()
    intake = Intake(await process(), "slack", handler)
    await intake.open()
    await intake.resume()
    assert await intake.receive("command:t1", "command", {"text": "a fox"})
    assert not await intake.receive("command:t1", "command", {"text": "a fox"})
    assert await intake.receive("event:Ev1", "mention", {"event": {}})
    await intake.settled()
    await intake.close()
    assert [(e.key, e.kind, e.payload, e.replayed) for e in handler.entries] == [
        ("slack:command:t1", "command", {"text": "a fox"}, False),
        ("slack:event:Ev1", "mention", {"event": {}}, False),
    ]


async def test_unfinished_requests_resume_after_a_restart_and_keys_are_remembered(process: Opener) -> None:
    stopped = Recorder()
    stopped.hold = True
    first = Intake(await process(), "slack", stopped)
    await first.open()
    await first.resume()
    await first.receive("command:t1", "command", {"text": "interrupted"})
    await first.receive("command:t2", "command", {"text": "never started"})
    await asyncio.wait_for(stopped.entered.wait(), 10)
    await first.close()  # the handlers never finished
    assert stopped.entries == []

    handler = Recorder()
    second = Intake(await process(), "slack", handler)
    other_platform = Intake(await process(), "discord", Recorder())
    await second.open()
    await second.resume()
    await other_platform.open()
    await other_platform.resume()
    await second.settled()
    replays = sorted((e.key, e.payload["text"]) for e in handler.entries)
    assert replays == [("slack:command:t1", "interrupted"), ("slack:command:t2", "never started")]
    assert handler.entries[0].replayed  # its handling had begun: it may have got as far as a job
    assert not await second.receive("command:t1", "command", {"text": "a retry"})
    await second.close()
    await other_platform.close()

    third = Intake(await process(), "slack", Recorder())
    await third.open()
    await third.resume()
    await third.settled()
    assert not await third.receive("command:t1", "command", {})
    await third.close()


async def test_old_keys_are_forgotten_and_a_failing_handler_is_not_retried(process: Opener) -> None:
    now = [1000.0]
    calls = []

    async def failing(entry: IntakeEntry) -> None:
        calls.append(entry.key)
        raise RuntimeError("the platform is down")

    intake = Intake(await process(), "slack", failing, retention_s=60.0, clock=lambda: now[0])
    await intake.open()
    await intake.resume()
    await intake.receive("command:t1", "command", {})
    await intake.settled()
    await intake.close()

    now[0] += 61.0
    later = Intake(await process(), "slack", failing, retention_s=60.0, clock=lambda: now[0])
    await later.open()
    await later.resume()
    await later.settled()
    assert calls == ["slack:command:t1"]  # handled (and failed) once; not handed over again
    assert await later.receive("command:t1", "command", {})  # past retention: a new request
    await later.settled()
    await later.close()
    assert calls == ["slack:command:t1", "slack:command:t1"]


async def test_a_deferred_request_is_kept_for_the_next_start(process: Opener) -> None:

    async def stopping(entry: IntakeEntry) -> None:
        raise Deferred("not now")

    first = Intake(await process(), "slack", stopping)
    await first.open()
    await first.resume()
    await first.receive("command:t1", "command", {"text": "later"})
    await first.settled()
    await first.close()

    handler = Recorder()
    second = Intake(await process(), "slack", handler)
    await second.open()
    await second.resume()
    await second.settled()
    await second.close()
    assert [(e.key, e.payload) for e in handler.entries] == [("slack:command:t1", {"text": "later"})]


async def test_requests_are_stored_at_once_and_handed_over_only_from_resume(process: Opener) -> None:
    """Between open() and resume() the intake stores (a restart then keeps them) but hands nothing over; resume()
    hands over what a previous run left, then what arrived meanwhile, each once; later requests go at once."""
    first = Intake(await process(), "discord", Recorder())
    await first.open()
    assert await first.receive("left", "command", {"text": "from the last run"})
    await first.close()  # never resumed: stored, never handed over

    handler = Recorder()
    second = Intake(await process(), "discord", handler)
    await second.open()
    assert await second.receive("early", "command", {"text": "before resume"})
    assert not await second.receive("early", "command", {"text": "a replay"})
    await second.settled()
    assert handler.entries == []
    await second.resume()
    await second.resume()
    await second.settled()
    assert await second.receive("late", "command", {"text": "after resume"})
    await second.settled()
    await second.close()
    assert [(e.key, e.replayed) for e in handler.entries] == [
        ("discord:left", False),
        ("discord:early", False),
        ("discord:late", False),
    ]


async def test_requests_arriving_together_are_stored_together_and_a_repeat_among_them_once(
    process: Opener,
) -> None:
    database = await process()
    statements: list[tuple[str, bool]] = []
    real_run_returning = database.run_returning

    async def counting(statement: object, parameters: object = None, *, first: bool = False) -> object:
        statements.append((str(statement), first))
        return await real_run_returning(statement, parameters, first=first)  # type: ignore[arg-type]

    database.run_returning = counting  # type: ignore[method-assign]
    handler = Recorder()
    intake = Intake(database, "slack", handler)
    await intake.open()
    await intake.resume()
    keys = [f"command:t{i}" for i in range(20)] + ["command:t3"]
    stored = await asyncio.gather(*(intake.receive(key, "command", {"text": key}) for key in keys))
    await intake.settled()
    await intake.close()
    assert stored == [True] * 20 + [False]
    assert sorted(e.key for e in handler.entries) == sorted(f"slack:command:t{i}" for i in range(20))
    # All arrived before the writer first ran: one statement for all 21, on the acknowledgement path's connection.
    assert [first for _, first in statements] == [True]
    restarted = Intake(await process(), "slack", handler)
    await restarted.open()
    assert restarted._waiting == []  # every one was marked done: nothing left for the next start
    await restarted.close()


async def test_requests_taken_together_are_handled_after_all_are_acknowledged_and_a_few_at_a_time(
    process: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is handled while a request is still being stored and acknowledged (its acknowledgement comes
    first); then the oldest are handled, at most MAX_HANDLING at once."""
    monkeypatch.setattr(intake_module, "MAX_HANDLING", 2)
    handler = Recorder()
    handler.hold = True
    intake = Intake(await process(), "discord", handler)
    await intake.open()
    await intake.resume()
    async with intake.taking("command:a", "command", {}) as a_stored:
        async with intake.taking("command:b", "command", {}) as b_stored:
            assert a_stored and b_stored
        assert not intake._tasks  # b is acknowledged, a not yet: b waits
    assert len(intake._tasks) == 2  # both acknowledged: both handled
    assert await intake.receive("command:c", "command", {})
    assert len(intake._tasks) == 2 and [entry.key for entry in intake._ready] == ["discord:command:c"]
    handler.release.set()
    await intake.settled()
    await intake.close()
    assert [entry.key for entry in handler.entries][-1] == "discord:command:c"
    assert sorted(entry.key for entry in handler.entries) == [
        "discord:command:a",
        "discord:command:b",
        "discord:command:c",
    ]
