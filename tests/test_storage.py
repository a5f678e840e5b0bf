"""The storage layer: store.url parsing, migrations (fresh, and a database written before migrations existed),
SQLite's settings, and the same migrations and stores on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from bots.intake import Intake, IntakeEntry
from config.settings import ModerationSettings
from engine.requests import JobState
from engine.store import JobRecord, JobStore
from moderation.audit import AuditLog
from moderation.review import ReviewQueue, ReviewState
from moderation.strikes import StrikeBook
from storage import migrate
from storage.database import Database, _WriteTurns
from storage.errors import NotOpen, StorageError, UnsupportedStore
from storage.tables import intake as intake_table
from storage.tables import metadata
from tests.storage_support import (
    IMAGE,
    LEGACY_INDEXES,
    LEGACY_MODERATION_SCHEMA,
    NOW,
    REQUEST,
    VERDICT,
    postgres_url,  # noqa: F401 (a fixture)
    sqlite_objects,
    write_legacy_database,
)

pytestmark = pytest.mark.timeout(120)
HEAD = "0007"
SETTINGS = ModerationSettings(strikes_to_ban=3, strike_window_s=3600.0, ban_duration_s=600.0, review_expiry_s=900.0)


# ---- store.url ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/imagine", "must start with sqlite:// or postgresql://, got 'mysql://localhost/imagine'"),
        ("sqlite://relative.db", "must look like sqlite:///path/to/file.db, got 'sqlite://relative.db'"),
        ("sqlite:///", "must look like sqlite:///path/to/file.db"),
        ("", "must start with sqlite:// or postgresql://, got ''"),
        ("mysql://me:hunter2@db/imagine", "got 'mysql://me:***@db/imagine'"),
    ],
)
def test_a_bad_store_url_is_named_in_the_error(url: str, message: str) -> None:
    with pytest.raises(UnsupportedStore, match="store.url ") as raised:
        Database(url)
    assert message in str(raised.value)
    assert isinstance(raised.value, StorageError) and isinstance(raised.value, ValueError)


def test_urls_pick_the_async_drivers() -> None:
    assert Database("sqlite:///var/imagine.db").dialect == "sqlite"
    assert Database("sqlite://:memory:").dialect == "sqlite"
    assert Database("postgresql://u:secret@db.example/imagine").dialect == "postgresql"
    assert Database("postgres://u@db.example/imagine").dialect == "postgresql"


async def test_using_a_database_before_connecting_says_so(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/never.db")
    with pytest.raises(NotOpen, match="is not open"):
        async with database.read():
            pass
    assert not (tmp_path / "never.db").exists()  # the constructor did nothing on disk


async def test_an_unreachable_postgres_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError, match="cannot open the database") as raised:
        await Database.open("postgresql://imagine:hunter2@127.0.0.1:1/imagine")
    assert "hunter2" not in str(raised.value)


# ---- SQLite ------------------------------------------------------------------------------------------------


async def test_a_fresh_sqlite_file_gets_every_table_in_wal_mode(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite:///{tmp_path}/deep/er/imagine.db")  # folders are created
    try:
        async with database.read() as db:
            assert (await db.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await db.execute(text("PRAGMA synchronous"))).scalar_one() == 1  # NORMAL
            assert (await db.execute(text("PRAGMA busy_timeout"))).scalar_one() == 30_000
            assert await db.run_sync(migrate.current_revision) == HEAD
    finally:
        await database.close()
    tables, indexes = sqlite_objects(str(tmp_path / "deep/er/imagine.db"))
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert LEGACY_INDEXES | {"deliveries_due"} <= indexes


@pytest.mark.parametrize("attempt", range(10))  # a race: SQLite refused one of them now and then ("locked")
async def test_opening_a_new_file_three_times_at_once_migrates_once(tmp_path: Path, attempt: int) -> None:
    url = f"sqlite:///{tmp_path}/imagine.db"
    opened = await asyncio.gather(*(Database.open(url) for _ in range(3)), return_exceptions=True)
    try:
        assert [type(result) for result in opened] == [Database] * 3, opened
        async with opened[-1].read() as db:  # type: ignore[union-attr]
            assert (await db.execute(text("SELECT version_num FROM alembic_version"))).scalars().all() == [HEAD]
    finally:
        for database in opened:
            if isinstance(database, Database):
                await database.close()


async def test_a_write_transaction_holds_the_write_lock_from_its_first_statement(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: another process cannot write between a transaction's read and its write."""
    path = tmp_path / "imagine.db"
    database = await Database.open(f"sqlite:///{path}")
    try:
        async with database.write() as db:
            await db.execute(text("SELECT COUNT(*) FROM jobs"))  # only a read so far
            with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
        with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # committed: free again
            other.execute("ROLLBACK")
    finally:
        await database.close()


async def test_a_write_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite:///{tmp_path}/imagine.db")
    try:
        with pytest.raises(RuntimeError, match="midway"):
            async with database.write() as db:
                await db.execute(text("INSERT INTO job_images VALUES ('w', 'j', 0)"))
                raise RuntimeError("midway")
        async with database.read() as db:
            assert (await db.execute(text("SELECT COUNT(*) FROM job_images"))).scalar_one() == 0
        with pytest.raises(StorageError, match="database error"):  # the driver's error, wrapped
            async with database.write() as db:
                await db.execute(text("INSERT INTO no_such_table VALUES (1)"))
    finally:
        await database.close()


async def test_a_database_written_before_migrations_is_adopted_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    write_legacy_database(str(path))
    database = await Database.open(f"sqlite:///{path}")
    try:
        async with database.read() as db:
            assert await db.run_sync(migrate.current_revision) == HEAD
        await _read_back_the_legacy_rows(database)
    finally:
        await database.close()
    tables, indexes = sqlite_objects(str(path))
    assert tables == set(metadata.tables) | {"alembic_version"} and LEGACY_INDEXES <= indexes


async def test_a_partial_legacy_database_gets_the_tables_it_lacked(tmp_path: Path) -> None:
    """`imagine review` alone created only the moderation tables: adopting it adds the rest, keeping its rows."""
    path = tmp_path / "imagine.db"
    write_legacy_database(str(path), schemas=(LEGACY_MODERATION_SCHEMA,))
    database = await Database.open(f"sqlite:///{path}")
    try:
        assert (await ReviewQueue(database, expiry_s=900, clock=lambda: NOW).get("abcdef0123")).request == REQUEST
        assert await JobStore(database).in_states(list(JobState)) == []
    finally:
        await database.close()
    tables, _ = sqlite_objects(str(path))
    assert tables == set(metadata.tables) | {"alembic_version"}


async def _read_back_the_legacy_rows(database: Database) -> None:
    clock = lambda: NOW + 10  # noqa: E731
    job = await JobStore(database).get("job-1")
    assert job is not None and job.state is JobState.DONE and job.request == REQUEST
    assert job.seeds == (7, 8, 9, 10) and job.images == (IMAGE,)
    assert await JobStore(database).find_image_by_watermark("00aa11bb22cc") == ("job-1", 0)

    queue = ReviewQueue(database, expiry_s=900, clock=clock)
    item = await queue.get("abcdef0123")
    assert (item.state, item.request, item.verdict) == (ReviewState.PENDING, REQUEST, VERDICT)
    await queue.approve(item.id, "cli:root")
    assert [claimed.id for claimed in await queue.claim_approved()] == [item.id]

    book = StrikeBook(database, SETTINGS, clock=clock)
    assert await book.strike_count("discord:111") == 1
    ban = await book.active_ban("discord:222")
    assert ban is not None and (ban.id, ban.reason, ban.expires_at) == ("ban0000001", "spam", None)

    entries = await AuditLog(database, clock=clock).entries(target="discord:222")
    assert [(e.actor, e.action, e.detail) for e in entries] == [("cli:root", "ban", "until lifted: spam")]

    handled: list[IntakeEntry] = []

    async def handler(entry: IntakeEntry) -> None:
        handled.append(entry)

    intake = Intake(database, "slack", handler, clock=clock)
    await intake.open()  # the unfinished row is handed over, as after any restart
    await intake.resume()
    await intake.settled()
    assert not await intake.receive("command:t1", "command", {})  # and its key is remembered
    await intake.close()
    assert [(e.key, e.payload, e.replayed) for e in handled] == [("slack:command:t1", {"text": "a fox"}, False)]


# ---- PostgreSQL --------------------------------------------------------------------------------------------


async def test_postgres_runs_the_same_migrations_and_stores(postgres_url: str) -> None:  # noqa: F811
    database = await Database.open(postgres_url)
    again = await Database.open(postgres_url)  # a second process: nothing left to migrate
    try:
        async with database.read() as db:
            assert await db.run_sync(migrate.current_revision) == HEAD
            tables = set(
                (await db.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars()
            )
        assert tables == set(metadata.tables) | {"alembic_version"}
        await _round_trip(database, again)
    finally:
        await database.close()
        await again.close()


async def _round_trip(database: Database, other: Database) -> None:
    clock = lambda: NOW  # noqa: E731
    store = JobStore(database)
    await store.add(
        JobRecord(
            id="job-1",
            request=REQUEST,
            seeds=(7, 8, 9, 10),
            width=768,
            height=768,
            steps=4,
            state=JobState.QUEUED,
            created_at=NOW,
        )
    )
    await store.set_done("job-1", [IMAGE])
    await store.set_done("job-1", [IMAGE])  # again: the watermark row is replaced, not duplicated
    record = await JobStore(other).get("job-1")
    assert record is not None and record.state is JobState.DONE and record.images == (IMAGE,)
    assert await store.find_image_by_watermark(IMAGE.watermark_id or "") == ("job-1", 0)

    queues = [ReviewQueue(db, expiry_s=900, clock=clock) for db in (database, other)]
    item = await queues[0].submit(REQUEST, VERDICT)
    await queues[1].reject(item.id, "slack:UMOD", "no")
    claims = await asyncio.gather(queues[0].claim_rejected(), queues[1].claim_rejected())
    assert sorted(len(claimed) for claimed in claims) == [0, 1]

    outcome = None
    for _ in range(3):
        outcome = await StrikeBook(database, SETTINGS, clock=clock).add_strike("discord:111", "gore", "gore")
    assert outcome is not None and outcome.strikes == 3 and outcome.ban is not None
    actions = [e.action for e in await AuditLog(other, clock=clock).entries(target="discord:111")]
    assert actions.count("strike") == 3 and actions.count("auto_ban") == 1

    handled: list[str] = []

    async def handler(entry: IntakeEntry) -> None:
        handled.append(entry.key)

    intakes = [Intake(db, "slack", handler) for db in (database, other)]
    for intake in intakes:
        await intake.open()
        await intake.resume()
    stored = await asyncio.gather(*(intake.receive("event:Ev1", "mention", {}) for intake in intakes))
    assert sorted(stored) == [False, True]  # a retry reaching two processes at once is stored once
    for intake in intakes:
        await intake.settled()
        await intake.close()
    assert handled == ["slack:event:Ev1"]


# ---- writes an acknowledgement waits on ------------------------------------------------------------------


async def test_a_first_write_commits_ahead_of_writes_queued_before_it_on_sqlite(tmp_path: Path) -> None:
    """`first=True` (the intake's write before an ack) goes on its own connection and thread, and takes the next
    turn at the write lock ahead of ordinary writers already waiting; what it writes everyone reads."""
    assert await first_and_ordinary_writes(f"sqlite:///{tmp_path}/db.sqlite") == ["first", "ordinary"]


async def test_a_first_write_has_its_own_connections_on_postgres(postgres_url: str) -> None:  # noqa: F811
    """PostgreSQL has no write lock to queue at: the two commit as they come, each one's rows read back."""
    assert sorted(await first_and_ordinary_writes(postgres_url)) == ["first", "ordinary"]


async def test_a_writer_cancelled_while_queued_for_its_turn_leaves_the_queue_working() -> None:
    """A writer cancelled while it waits (a task shut down mid-write) whose turn comes before it has run its
    cancellation: the turn skips it, it ends cancelled, and the next writer is not held up."""
    turns = _WriteTurns()

    async def take_a_turn() -> None:
        async with turns.turn(first=False):
            pass

    async with turns.turn(first=False):
        queued = asyncio.create_task(take_a_turn())
        await asyncio.sleep(0)  # it queues behind the turn held here
        queued.cancel()  # its wait is cancelled now; the task runs its handler only after the turn is passed on
    with pytest.raises(asyncio.CancelledError):
        await queued
    async with asyncio.timeout(5):
        await take_a_turn()


async def test_an_acknowledgements_write_leaves_wal_checkpoints_to_the_other_connection(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        (first,) = await database.run_returning(text("PRAGMA wal_autocheckpoint"), first=True)
        async with database.read() as connection:
            ordinary = (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
    finally:
        await database.close()
    assert (first[0], ordinary) == (0, 1000)


async def first_and_ordinary_writes(url: str) -> list[str]:
    """While a write transaction is open, an ordinary write and then a `first=True` one; the order in which
    they committed (after checking that all three writes are there)."""
    database = await Database.open(url)
    committed: list[str] = []

    def insert(key: str) -> Any:
        row = {"key": key, "platform": "slack", "kind": "command", "payload_json": "{}", "received_at": NOW}
        return database.insert(intake_table).values(row).returning(intake_table.c.key)

    async def write(key: str, *, first: bool) -> None:
        assert [row.key for row in await database.run_returning(insert(key), first=first)] == [key]
        committed.append(key)

    try:
        async with database.write() as connection:  # a write in progress: on SQLite both below wait for it
            await connection.execute(insert("in-progress"))
            ordinary = asyncio.create_task(write("ordinary", first=False))
            await asyncio.sleep(0)  # the ordinary write queues first
            first = asyncio.create_task(write("first", first=True))
            await asyncio.sleep(0)
        await asyncio.gather(ordinary, first)
        async with database.read() as connection:
            stored = set((await connection.execute(select(intake_table.c.key))).scalars())
    finally:
        await database.close()
    assert stored == {"in-progress", "ordinary", "first"}
    return committed
