"""The append-only audit log of moderator actions, including refused attempts.

Every decision made through this package (approve, reject, ban, unban, clear strikes, automatic bans) writes
its entry in the same transaction as the change. Adapters record what they refuse themselves, e.g. a
non-moderator pressing "Approve":

    await audit.record_refused("discord:123", "approve", "review:3f9c0a1b2d", "not a moderator")

Entries are never updated or deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from moderation.db import ModerationDatabase, ordered_id

OK, REFUSED, FAILED = "ok", "refused", "failed"


@dataclass(frozen=True)
class AuditEntry:
    id: str
    created_at: float
    actor: str
    """Who acted: "discord:123", "slack:U123", "cli:alice" or "system"."""
    action: str
    """approve | reject | ban | unban | clear_strikes | auto_ban | strike | ... (free text for adapters)."""
    target: str
    """What it acted on: "review:<id>" or a user key such as "discord:456"."""
    outcome: str
    """ok | refused (not allowed) | failed (e.g. already decided)."""
    detail: str


class AuditLog:
    def __init__(self, db: ModerationDatabase) -> None:
        self._db = db

    async def record(self, actor: str, action: str, target: str, detail: str = "", outcome: str = OK) -> AuditEntry:
        return await self._db.run(insert_entry, self._db.clock, actor, action, target, outcome, detail)

    async def record_refused(self, actor: str, action: str, target: str, detail: str = "") -> AuditEntry:
        """Someone tried an action they may not take (e.g. a non-moderator pressed Approve)."""
        return await self.record(actor, action, target, detail, REFUSED)

    async def entries(
        self, limit: int = 100, *, target: str | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """The most recent entries first."""
        return await self._db.run(_select, limit, target, actor)


def insert_entry(connection: sqlite3.Connection, clock: Callable[[], float], actor: str, action: str,
                 target: str, outcome: str, detail: str) -> AuditEntry:
    """Append one entry; call inside the caller's transaction so the entry commits with the change."""
    entry = AuditEntry(ordered_id(), clock(), actor, action, target, outcome, detail)
    connection.execute(
        "INSERT INTO audit_log (id, created_at, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (entry.id, entry.created_at, entry.actor, entry.action, entry.target, entry.outcome, entry.detail),
    )
    return entry


def _select(connection: sqlite3.Connection, limit: int, target: str | None, actor: str | None) -> list[AuditEntry]:
    clauses, params = [], []
    if target is not None:
        clauses.append("target = ?")
        params.append(target)
    if actor is not None:
        clauses.append("actor = ?")
        params.append(actor)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(
        f"SELECT id, created_at, actor, action, target, outcome, detail FROM audit_log {where}"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [AuditEntry(*row) for row in rows]
