"""Strikes and bans, persisted in the moderation tables (nothing is lost on restart).

Policy (settings `[moderation]`): every blocked prompt adds a strike; `strikes_to_ban` strikes within
`strike_window_s` ban the user for `ban_duration_s`. A prompt that demands it (sexual content involving minors)
bans at once with no end date, "pending review": it lasts until a moderator lifts it. Strikes are kept after a
ban, so a user whose ban ends and who offends again within the window is banned again at once. Moderators
ban, unban and clear strikes; each action is written to the audit log in the same transaction.

    ban = await strikes.active_ban("discord:123")          # None, or the ban in force
    outcome = await strikes.add_strike("discord:123", "sexual", "explicit sexual content: 'porn'")
    await strikes.ban("discord:123", "discord:999", reason="spam", duration_s=3600)   # None: until lifted
    await strikes.unban("discord:123", "discord:999")
    await strikes.clear_strikes("discord:123", "discord:999")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import ModerationSettings
from moderation.audit import OK, insert_entry
from moderation.db import ModerationDatabase, new_id, transaction

SYSTEM = "system"


@dataclass(frozen=True)
class Ban:
    id: str
    user_key: str
    created_at: float
    expires_at: float | None
    """None: until a moderator lifts it."""
    reason: str
    created_by: str
    pending_review: bool
    """An automatic ban that a moderator should look at (and lift, or keep)."""

    def remaining_s(self, now: float) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - now)


@dataclass(frozen=True)
class StrikeOutcome:
    strikes: int
    """The user's strikes within the window, this one included."""
    ban: Ban | None
    """The ban this strike caused, if any."""


BAN_COLUMNS = "id, user_key, created_at, expires_at, reason, created_by, pending_review"


class StrikeBook:
    def __init__(self, db: ModerationDatabase, settings: ModerationSettings) -> None:
        self._db = db
        self.strikes_to_ban = settings.strikes_to_ban
        self.window_s = settings.strike_window_s
        self.ban_duration_s = settings.ban_duration_s

    @property
    def _clock(self) -> Callable[[], float]:
        return self._db.clock

    async def active_ban(self, user_key: str) -> Ban | None:
        """The ban in force for this user (the longest one if several), or None."""
        return await self._db.run(_active_ban, user_key, self._clock())

    async def bans(self, *, active_only: bool = True) -> list[Ban]:
        return await self._db.run(_list_bans, self._clock(), active_only)

    async def strike_count(self, user_key: str) -> int:
        return await self._db.run(_count_strikes, user_key, self._clock() - self.window_s)

    async def add_strike(self, user_key: str, category: str, reason: str, *, ban_now: bool = False) -> StrikeOutcome:
        """Record a strike; ban if this one reaches the threshold, or at once (no end) when `ban_now`."""
        return await self._db.run(self._add_strike, user_key, category, reason, ban_now)

    async def ban(self, user_key: str, moderator: str, *, reason: str = "", duration_s: float | None = None) -> Ban:
        """Ban a user now; `duration_s=None` bans until lifted."""
        if duration_s is not None and duration_s <= 0:
            raise ValueError(f"ban duration must be greater than 0 seconds, got {duration_s}")
        return await self._db.run(self._ban, user_key, moderator, reason, duration_s)

    async def unban(self, user_key: str, moderator: str, reason: str = "") -> int:
        """Lift every ban in force for the user; returns how many were lifted (0: was not banned)."""
        return await self._db.run(self._unban, user_key, moderator, reason)

    async def clear_strikes(self, user_key: str, moderator: str) -> int:
        """Clear the user's strikes (kept, marked cleared); returns how many were cleared."""
        return await self._db.run(self._clear, user_key, moderator)

    # -- in the database thread -------------------------------------------------------------------------

    def _add_strike(self, db: sqlite3.Connection, user_key: str, category: str, reason: str,
                    ban_now: bool) -> StrikeOutcome:
        now = self._clock()
        with transaction(db):
            db.execute(
                "INSERT INTO strikes (id, user_key, created_at, category, reason) VALUES (?, ?, ?, ?, ?)",
                (new_id(8), user_key, now, category, reason),
            )
            insert_entry(db, self._clock, SYSTEM, "strike", user_key, OK, f"{category}: {reason}")
            count = _count_strikes(db, user_key, now - self.window_s)
            ban = None
            if ban_now:
                ban = _insert_ban(db, now, user_key, SYSTEM, f"immediate ban ({category}): {reason}", None, True)
            elif count >= self.strikes_to_ban and _active_ban(db, user_key, now) is None:
                why = f"{count} strikes within {self.window_s:g} s (last: {category})"
                ban = _insert_ban(db, now, user_key, SYSTEM, why, now + self.ban_duration_s, False)
            if ban is not None:
                insert_entry(db, self._clock, SYSTEM, "auto_ban", user_key, OK, ban.reason)
        return StrikeOutcome(count, ban)

    def _ban(self, db: sqlite3.Connection, user_key: str, moderator: str, reason: str,
             duration_s: float | None) -> Ban:
        now = self._clock()
        expires = None if duration_s is None else now + duration_s
        with transaction(db):
            ban = _insert_ban(db, now, user_key, moderator, reason or "banned by a moderator", expires, False)
            length = "until lifted" if duration_s is None else f"for {duration_s:g} s"
            insert_entry(db, self._clock, moderator, "ban", user_key, OK, f"{length}: {ban.reason}")
        return ban

    def _unban(self, db: sqlite3.Connection, user_key: str, moderator: str, reason: str) -> int:
        now = self._clock()
        with transaction(db):
            lifted = db.execute(
                "UPDATE bans SET lifted_at = ?, lifted_by = ? WHERE user_key = ? AND lifted_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (now, moderator, user_key, now),
            ).rowcount
            insert_entry(db, self._clock, moderator, "unban", user_key, OK if lifted else "failed",
                         reason or ("lifted" if lifted else "was not banned"))
        return lifted

    def _clear(self, db: sqlite3.Connection, user_key: str, moderator: str) -> int:
        now = self._clock()
        with transaction(db):
            cleared = db.execute(
                "UPDATE strikes SET cleared_at = ?, cleared_by = ? WHERE user_key = ? AND cleared_at IS NULL",
                (now, moderator, user_key),
            ).rowcount
            insert_entry(db, self._clock, moderator, "clear_strikes", user_key, OK, f"{cleared} cleared")
        return cleared


def _count_strikes(db: sqlite3.Connection, user_key: str, since: float) -> int:
    row = db.execute(
        "SELECT COUNT(*) FROM strikes WHERE user_key = ? AND created_at > ? AND cleared_at IS NULL",
        (user_key, since),
    ).fetchone()
    return int(row[0])


def _insert_ban(db: sqlite3.Connection, now: float, user_key: str, by: str, reason: str,
                expires_at: float | None, pending_review: bool) -> Ban:
    ban = Ban(new_id(8), user_key, now, expires_at, reason, by, pending_review)
    db.execute(
        f"INSERT INTO bans ({BAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (ban.id, user_key, now, expires_at, reason, by, int(pending_review)),
    )
    return ban


def _active_ban(db: sqlite3.Connection, user_key: str, now: float) -> Ban | None:
    rows = db.execute(
        f"SELECT {BAN_COLUMNS} FROM bans WHERE user_key = ? AND lifted_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (user_key, now),
    ).fetchall()
    bans = [_ban_from_row(row) for row in rows]
    return max(bans, key=lambda b: float("inf") if b.expires_at is None else b.expires_at, default=None)


def _list_bans(db: sqlite3.Connection, now: float, active_only: bool) -> list[Ban]:
    where = "WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?)" if active_only else ""
    rows = db.execute(
        f"SELECT {BAN_COLUMNS} FROM bans {where} ORDER BY created_at DESC", (now,) if active_only else ()
    ).fetchall()
    return [_ban_from_row(row) for row in rows]


def _ban_from_row(row: tuple) -> Ban:
    ban_id, user_key, created_at, expires_at, reason, created_by, pending = row
    return Ban(ban_id, user_key, created_at, expires_at, reason, created_by, bool(pending))
