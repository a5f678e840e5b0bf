"""Local moderator accounts, for deployments without Discord or Slack sign-in (`imagine mod add NAME`).

    accounts = LocalAccounts(database)
    await accounts.add("alice", "a long passphrase")       # replaces alice's password if she exists
    name = await accounts.verify("alice", "a long passphrase")   # "alice", or None

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile); hashing and
checking take tens of milliseconds of CPU each, so they run in a worker thread, never on the event loop.
`verify` spends the same work on an unknown name as on a wrong password, so timing does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from storage.database import Database
from storage.tables import moderator_accounts

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; a bound keeps a sign-in form from being a CPU lever


class AccountError(ValueError):
    """A name or password that cannot be used; the message says why (never echoes the password)."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise AccountError(
            f"account name must be 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, got {name!r}"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password must be at least {MIN_PASSWORD_CHARS} characters long")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"the password must be at most {MAX_PASSWORD_CHARS} characters long")
    return password


class LocalAccounts:
    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock
        self._hasher = PasswordHasher()
        self._decoy_hash = ""
        """Checked against for unknown names, so they take as long as known ones; hashed on first need, in a
        thread (argon2 takes a noticeable fraction of a second: not on the event loop, not at start-up)."""

    async def add(self, name: str, password: str) -> bool:
        """Create the account, or set a new password on an existing one; True when it was created."""
        check_name(name)
        hashed = await asyncio.to_thread(self._hasher.hash, check_password(password))
        now = self._clock()
        async with self._database.write() as db:
            exists = (
                await db.execute(select(moderator_accounts.c.name).where(moderator_accounts.c.name == name))
            ).first()
            if exists:
                await db.execute(
                    update(moderator_accounts)
                    .where(moderator_accounts.c.name == name)
                    .values(password_hash=hashed, updated_at=now, disabled_at=None)
                )
            else:
                await db.execute(
                    moderator_accounts.insert().values(name=name, password_hash=hashed, created_at=now, updated_at=now)
                )
        return not exists

    async def disable(self, name: str) -> bool:
        """The account can no longer sign in (kept, so the audit log's `local:NAME` still means someone)."""
        changed = await self._database.run(
            update(moderator_accounts)
            .where(moderator_accounts.c.name == name, moderator_accounts.c.disabled_at.is_(None))
            .values(disabled_at=self._clock())
        )
        return changed == 1

    async def names(self) -> list[str]:
        query = select(moderator_accounts.c.name).where(moderator_accounts.c.disabled_at.is_(None))
        async with self._database.read() as db:
            return [row.name for row in (await db.execute(query.order_by(moderator_accounts.c.name))).all()]

    async def verify(self, name: str, password: str) -> str | None:
        """The account's name when the password is right and the account is enabled, else None."""
        if not NAME.match(name) or len(password) > MAX_PASSWORD_CHARS:
            return None
        query = select(moderator_accounts.c.password_hash).where(
            moderator_accounts.c.name == name, moderator_accounts.c.disabled_at.is_(None)
        )
        async with self._database.read() as db:
            row = (await db.execute(query)).first()
        stored = row.password_hash if row else await self._decoy()
        if not await asyncio.to_thread(self._matches, stored, password):
            return None
        return name if row else None

    async def _decoy(self) -> str:
        if not self._decoy_hash:
            self._decoy_hash = await asyncio.to_thread(self._hasher.hash, "decoy password for unknown names")
        return self._decoy_hash

    def _matches(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False
