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

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Row, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from config.settings import ModerationSettings
from moderation.audit import OK, insert_entry
from moderation.ids import new_id
from storage.database import Database
from storage.tables import bans, strikes

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


BAN_COLUMNS = tuple(
    bans.c[name] for name in ("id", "user_key", "created_at", "expires_at", "reason", "created_by", "pending_review")
)


class StrikeBook:
    def __init__(
        self, database: Database, settings: ModerationSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._database = database
        self._clock = clock
        self.strikes_to_ban = settings.strikes_to_ban
        self.window_s = settings.strike_window_s
        self.ban_duration_s = settings.ban_duration_s

    async def active_ban(self, user_key: str) -> Ban | None:
        """The ban in force for this user (the longest one if several), or None."""
        async with self._database.read() as db:
            return await _active_ban(db, user_key, self._clock())

    async def bans(self, *, active_only: bool = True) -> list[Ban]:
        query = select(*BAN_COLUMNS).order_by(bans.c.created_at.desc())
        if active_only:
            query = query.where(_in_force(self._clock()))
        async with self._database.read() as db:
            rows = (await db.execute(query)).all()
        return [_ban_from_row(row) for row in rows]

    async def strike_count(self, user_key: str) -> int:
        async with self._database.read() as db:
            return await _count_strikes(db, user_key, self._clock() - self.window_s)

    async def add_strike(self, user_key: str, category: str, reason: str, *, ban_now: bool = False) -> StrikeOutcome:
        """Record a strike; ban if this one reaches the threshold, or at once (no end) when `ban_now`."""
        now = self._clock()
        async with self._database.write() as db:
            await self._database.serialize(db, f"strikes:{user_key}")  # count and ban as one step per user
            await db.execute(
                strikes.insert().values(
                    id=new_id(8), user_key=user_key, created_at=now, category=category, reason=reason
                )
            )
            await insert_entry(db, self._clock, SYSTEM, "strike", user_key, OK, f"{category}: {reason}")
            count = await _count_strikes(db, user_key, now - self.window_s)
            ban = None
            if ban_now:
                ban = await _insert_ban(db, now, user_key, SYSTEM, f"immediate ban ({category}): {reason}", None, True)
            elif count >= self.strikes_to_ban and await _active_ban(db, user_key, now) is None:
                why = f"{count} strikes within {self.window_s:g} s (last: {category})"
                ban = await _insert_ban(db, now, user_key, SYSTEM, why, now + self.ban_duration_s, False)
            if ban is not None:
                await insert_entry(db, self._clock, SYSTEM, "auto_ban", user_key, OK, ban.reason)
        return StrikeOutcome(count, ban)

    async def ban(self, user_key: str, moderator: str, *, reason: str = "", duration_s: float | None = None) -> Ban:
        """Ban a user now; `duration_s=None` bans until lifted."""
        if duration_s is not None and duration_s <= 0:
            raise ValueError(f"ban duration must be greater than 0 seconds, got {duration_s}")
        now = self._clock()
        expires = None if duration_s is None else now + duration_s
        async with self._database.write() as db:
            ban = await _insert_ban(db, now, user_key, moderator, reason or "banned by a moderator", expires, False)
            length = "until lifted" if duration_s is None else f"for {duration_s:g} s"
            await insert_entry(db, self._clock, moderator, "ban", user_key, OK, f"{length}: {ban.reason}")
        return ban

    async def unban(self, user_key: str, moderator: str, reason: str = "") -> int:
        """Lift every ban in force for the user; returns how many were lifted (0: was not banned)."""
        now = self._clock()
        async with self._database.write() as db:
            lifted = (
                await db.execute(
                    update(bans)
                    .where(bans.c.user_key == user_key, _in_force(now))
                    .values(lifted_at=now, lifted_by=moderator)
                )
            ).rowcount
            await insert_entry(
                db,
                self._clock,
                moderator,
                "unban",
                user_key,
                OK if lifted else "failed",
                reason or ("lifted" if lifted else "was not banned"),
            )
        return lifted

    async def clear_strikes(self, user_key: str, moderator: str) -> int:
        """Clear the user's strikes (kept, marked cleared); returns how many were cleared."""
        now = self._clock()
        async with self._database.write() as db:
            cleared = (
                await db.execute(
                    update(strikes)
                    .where(strikes.c.user_key == user_key, strikes.c.cleared_at.is_(None))
                    .values(cleared_at=now, cleared_by=moderator)
                )
            ).rowcount
            await insert_entry(db, self._clock, moderator, "clear_strikes", user_key, OK, f"{cleared} cleared")
        return cleared


def _in_force(now: float) -> ColumnElement[bool]:
    return bans.c.lifted_at.is_(None) & or_(bans.c.expires_at.is_(None), bans.c.expires_at > now)


async def _count_strikes(db: AsyncConnection, user_key: str, since: float) -> int:
    query = (
        select(func.count())
        .select_from(strikes)
        .where(strikes.c.user_key == user_key, strikes.c.created_at > since, strikes.c.cleared_at.is_(None))
    )
    return int((await db.execute(query)).scalar_one())


async def _insert_ban(
    db: AsyncConnection, now: float, user_key: str, by: str, reason: str, expires_at: float | None, pending_review: bool
) -> Ban:
    ban = Ban(new_id(8), user_key, now, expires_at, reason, by, pending_review)
    await db.execute(
        bans.insert().values(
            id=ban.id,
            user_key=user_key,
            created_at=now,
            expires_at=expires_at,
            reason=reason,
            created_by=by,
            pending_review=int(pending_review),
        )
    )
    return ban


async def _active_ban(db: AsyncConnection, user_key: str, now: float) -> Ban | None:
    rows = (await db.execute(select(*BAN_COLUMNS).where(bans.c.user_key == user_key, _in_force(now)))).all()
    found = [_ban_from_row(row) for row in rows]
    return max(found, key=lambda b: float("inf") if b.expires_at is None else b.expires_at, default=None)


def _ban_from_row(row: Row) -> Ban:
    ban_id, user_key, created_at, expires_at, reason, created_by, pending = row
    return Ban(ban_id, user_key, created_at, expires_at, reason, created_by, bool(pending))
