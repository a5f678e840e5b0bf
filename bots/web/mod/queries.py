"""The dashboard's read-only views over the moderation tables and the job journal (what the stores themselves
do not list): a user's strikes, bans and recent prompts, who has strikes or bans, and holds and blocks per day."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import select

from engine.serialize import request_from_json
from storage.database import Database
from storage.tables import bans, jobs, review_items, strikes

DAY_S = 86400.0


@dataclass(frozen=True)
class StrikeRow:
    created_at: float
    category: str
    reason: str
    cleared: bool


@dataclass(frozen=True)
class BanRow:
    created_at: float
    expires_at: float | None
    reason: str
    created_by: str
    lifted_at: float | None
    lifted_by: str | None

    def in_force(self, now: float) -> bool:
        return self.lifted_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class PromptRow:
    created_at: float
    prompt: str
    outcome: str
    """The job's state, or "held: <review state>"."""


@dataclass(frozen=True)
class UserRecord:
    user_key: str
    strikes: list[StrikeRow] = field(default_factory=list)
    bans: list[BanRow] = field(default_factory=list)
    prompts: list[PromptRow] = field(default_factory=list)

    def active_strikes(self, since: float) -> int:
        return sum(1 for strike in self.strikes if not strike.cleared and strike.created_at > since)

    def ban_in_force(self, now: float) -> BanRow | None:
        return next((ban for ban in self.bans if ban.in_force(now)), None)


@dataclass(frozen=True)
class DayCount:
    day: int
    """Days since 1970-01-01 (UTC)."""
    kind: str
    """"held" or "blocked"."""
    category: str
    count: int


async def user_record(database: Database, user_key: str, *, prompts: int = 20) -> UserRecord:
    async with database.read() as db:
        strike_rows = (
            await db.execute(
                select(strikes.c.created_at, strikes.c.category, strikes.c.reason, strikes.c.cleared_at)
                .where(strikes.c.user_key == user_key)
                .order_by(strikes.c.created_at.desc())
                .limit(50)
            )
        ).all()
        ban_rows = (
            await db.execute(
                select(
                    bans.c.created_at,
                    bans.c.expires_at,
                    bans.c.reason,
                    bans.c.created_by,
                    bans.c.lifted_at,
                    bans.c.lifted_by,
                )
                .where(bans.c.user_key == user_key)
                .order_by(bans.c.created_at.desc())
                .limit(20)
            )
        ).all()
        job_rows = (
            await db.execute(
                select(jobs.c.created_at, jobs.c.request_json, jobs.c.state)
                .where(jobs.c.user_key == user_key)
                .order_by(jobs.c.created_at.desc())
                .limit(prompts)
            )
        ).all()
        held_rows = (
            await db.execute(
                select(review_items.c.created_at, review_items.c.request_json, review_items.c.state)
                .where(review_items.c.user_key == user_key)
                .order_by(review_items.c.created_at.desc())
                .limit(prompts)
            )
        ).all()
    recent = [PromptRow(row.created_at, _prompt(row.request_json), row.state) for row in job_rows]
    recent += [PromptRow(row.created_at, _prompt(row.request_json), f"held: {row.state}") for row in held_rows]
    recent.sort(key=lambda row: row.created_at, reverse=True)
    return UserRecord(
        user_key,
        [StrikeRow(row.created_at, row.category, row.reason, row.cleared_at is not None) for row in strike_rows],
        [BanRow(*row) for row in ban_rows],
        recent[:prompts],
    )


async def users_with_records(database: Database, since: float, limit: int = 100) -> list[str]:
    """Users with a strike since `since` or any ban, most recent first."""
    async with database.read() as db:
        struck = (
            await db.execute(
                select(strikes.c.user_key, strikes.c.created_at)
                .where(strikes.c.created_at > since)
                .order_by(strikes.c.created_at.desc())
                .limit(limit * 5)
            )
        ).all()
        banned = (
            await db.execute(
                select(bans.c.user_key, bans.c.created_at).order_by(bans.c.created_at.desc()).limit(limit * 5)
            )
        ).all()
    latest: dict[str, float] = {}
    for user_key, created_at in [*struck, *banned]:
        latest[user_key] = max(created_at, latest.get(user_key, 0.0))
    return sorted(latest, key=lambda key: latest[key], reverse=True)[:limit]


async def holds_and_blocks_per_day(database: Database, since: float) -> list[DayCount]:
    """Prompts held for review (by the verdict's first category) and blocked (by the strike's category)."""
    async with database.read() as db:
        held = (
            await db.execute(
                select(review_items.c.created_at, review_items.c.verdict_json).where(review_items.c.created_at > since)
            )
        ).all()
        blocked = (
            await db.execute(select(strikes.c.created_at, strikes.c.category).where(strikes.c.created_at > since))
        ).all()
    counts: dict[tuple[int, str, str], int] = {}
    for created_at, verdict_json in held:
        key = (int(created_at // DAY_S), "held", _held_category(verdict_json))
        counts[key] = counts.get(key, 0) + 1
    for created_at, category in blocked:
        key = (int(created_at // DAY_S), "blocked", category or "other")
        counts[key] = counts.get(key, 0) + 1
    return [DayCount(day, kind, category, count) for (day, kind, category), count in sorted(counts.items())]


def _held_category(verdict_json: str) -> str:
    try:
        verdict = json.loads(verdict_json)
    except ValueError:
        return "other"
    return str(verdict.get("user_reason") or next(iter(verdict.get("categories") or ()), "") or "other")


def _prompt(request_json: str) -> str:
    try:
        return request_from_json(request_json).prompt
    except (ValueError, KeyError, TypeError):
        return "(unreadable)"
