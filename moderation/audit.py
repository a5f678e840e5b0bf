"""The append-only audit log of moderator actions, including refused attempts.

Every decision made through this package (approve, reject, ban, unban, clear strikes, automatic bans) writes
its entry in the same transaction as the change. Adapters record what they refuse themselves, e.g. a
non-moderator pressing "Approve":

    await audit.record_refused("discord:123", "approve", "review:3f9c0a1b2d", "not a moderator")

Entries are never updated or deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from moderation.ids import ordered_id
from storage.database import Database
from storage.tables import audit_log

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
    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock

    async def record(self, actor: str, action: str, target: str, detail: str = "", outcome: str = OK) -> AuditEntry:
        async with self._database.write() as db:
            return await insert_entry(db, self._clock, actor, action, target, outcome, detail)

    async def record_refused(self, actor: str, action: str, target: str, detail: str = "") -> AuditEntry:
        """Someone tried an action they may not take (e.g. a non-moderator pressed Approve)."""
        return await self.record(actor, action, target, detail, REFUSED)

    async def entries(
        self,
        limit: int = 100,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> list[AuditEntry]:
        """The most recent entries first; each filter given must match exactly."""
        query = select(*audit_log.c).order_by(audit_log.c.created_at.desc(), audit_log.c.id.desc()).limit(limit)
        for column, wanted in (("target", target), ("actor", actor), ("action", action), ("outcome", outcome)):
            if wanted is not None:
                query = query.where(audit_log.c[column] == wanted)
        async with self._database.read() as db:
            rows = (await db.execute(query)).all()
        return [AuditEntry(*row) for row in rows]


async def insert_entry(
    db: AsyncConnection, clock: Callable[[], float], actor: str, action: str, target: str, outcome: str, detail: str
) -> AuditEntry:
    """Append one entry; call inside the caller's transaction so the entry commits with the change."""
    entry = AuditEntry(ordered_id(), clock(), actor, action, target, outcome, detail)
    await db.execute(audit_log.insert().values(**asdict(entry)))
    return entry
