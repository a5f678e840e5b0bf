"""The storage layer: store.url parsing, migrations, SQLite's settings, and the same migrations on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import migrate
from storage.database import Database
from storage.errors import NotOpen, StorageError, UnsupportedStore
from storage.tables import metadata
from tests.storage_support import (
    LEGACY_INDEXES,
    postgres_url,  # noqa: F401 (a fixture)
    sqlite_objects,
)

pytestmark = pytest.mark.timeout(120)
HEAD = "0002"


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


async def test_opening_twice_at_once_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/imagine.db"
    first, second = await asyncio.gather(Database.open(url), Database.open(url))
    try:
        async with second.read() as db:
            assert (await db.execute(text("SELECT version_num FROM alembic_version"))).scalars().all() == [HEAD]
    finally:
        await first.close()
        await second.close()


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


# ---- PostgreSQL --------------------------------------------------------------------------------------------


async def test_postgres_runs_the_same_migrations(postgres_url: str) -> None:  # noqa: F811
    database = await Database.open(postgres_url)
    again = await Database.open(postgres_url)  # a second process: nothing left to migrate
    try:
        async with database.read() as db:
            assert await db.run_sync(migrate.current_revision) == HEAD
            tables = set(
                (await db.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars()
            )
        assert tables == set(metadata.tables) | {"alembic_version"}
    finally:
        await database.close()
        await again.close()
