"""Local moderator accounts: `imagine mod add NAME` called as a shell calls it, and the argon2 check behind the
dashboard's local sign-in."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bots.cli import main
from bots.web.mod.local_accounts import LocalAccounts
from storage.database import Database
from storage.tables import moderator_accounts

PASSWORD = "correct horse battery staple"


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/imagine.db"
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    monkeypatch.setenv("IMAGINE_STORE__URL", url)
    return url


def stdin_lines(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


async def opened_accounts(url: str) -> tuple[Database, LocalAccounts]:
    database = await Database.open(url)
    return database, LocalAccounts(database)


def test_mod_add_reads_the_password_from_stdin_and_stores_only_an_argon2_hash(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin_lines(monkeypatch, PASSWORD + "\n")
    assert main(["mod", "add", "alice"]) == 0
    assert "created local moderator 'alice'" in capsys.readouterr().out

    async def check() -> None:
        database, accounts = await opened_accounts(store_url)
        try:
            assert await accounts.verify("alice", PASSWORD) == "alice"
            assert await accounts.verify("alice", PASSWORD + "!") is None
            assert await accounts.verify("bob", PASSWORD) is None
            async with database.read() as db:
                stored = (await db.execute(select(moderator_accounts.c.password_hash))).scalar_one()
            assert stored.startswith("$argon2id$") and PASSWORD not in stored
        finally:
            await database.close()

    asyncio.run(check())


def test_mod_add_again_changes_the_password_and_disable_stops_sign_in(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin_lines(monkeypatch, PASSWORD + "\n")
    assert main(["mod", "add", "alice"]) == 0
    stdin_lines(monkeypatch, "a different passphrase\n")
    assert main(["mod", "add", "alice"]) == 0
    assert "password changed for local moderator 'alice'" in capsys.readouterr().out
    assert main(["mod", "list"]) == 0 and capsys.readouterr().out == "alice\n"

    async def verify(password: str) -> str | None:
        database, accounts = await opened_accounts(store_url)
        try:
            return await accounts.verify("alice", password)
        finally:
            await database.close()

    assert asyncio.run(verify(PASSWORD)) is None and asyncio.run(verify("a different passphrase")) == "alice"
    assert main(["mod", "disable", "alice"]) == 0
    assert asyncio.run(verify("a different passphrase")) is None
    assert main(["mod", "disable", "alice"]) == 1
    assert "no enabled local moderator named 'alice'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("alice", "short", "at least 12 characters"),
        ("Alice Smith", PASSWORD, "account name must be 1-64 lower-case letters"),
        ("", PASSWORD, "account name must be"),
    ],
)
def test_mod_add_refuses_a_bad_name_or_password_with_one_line_and_changes_nothing(
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    password: str,
    message: str,
) -> None:
    stdin_lines(monkeypatch, password + "\n")
    assert main(["mod", "add", name]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err and password not in err
    assert main(["mod", "list"]) == 0 and capsys.readouterr().out == ""
