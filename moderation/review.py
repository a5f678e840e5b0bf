"""The review queue: prompts held for a human, in the database, shared by every process.

    item = await queue.submit(request, verdict)           # state "pending"; expires after review_expiry_s
    await queue.approve(item.id, "slack:U42", reason="fine in context")    # or queue.reject(...)
    for item in await queue.claim_decided():               # in `imagine serve`, polled
        ...  # approved: submit item.request to the engine; rejected/expired: tell item.request.requester

States: pending -> approved | rejected | expired. Deciding an item that is already decided or expired raises
`AlreadyDecided` / `ReviewExpired` (the attempt is still written to the audit log, outcome "failed");
an unknown id raises `ReviewItemNotFound`. Because `imagine review approve ID` may run in another process than
`imagine serve`, a decision only changes the row; the serving process calls `claim_decided()` (or
`claim_approved()` / `claim_rejected()`), which atomically hands each decided item to exactly one caller,
once (pass `platforms=` to claim only items whose requester that process can reach). Pending items past their
expiry become `expired` on the next claim or `expire_due()` call, and are handed out by `claim_decided()` too, so
that the requester hears that nobody looked in time.
The whole request is kept (engine.serialize), including the adapter's opaque `delivery` context.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from engine.requests import GenerationRequest, Requester
from engine.serialize import request_from_json, request_to_json
from moderation.audit import FAILED, OK, insert_entry
from moderation.db import ModerationDatabase, new_id, transaction
from moderation.errors import AlreadyDecided, ReviewExpired, ReviewItemNotFound
from moderation.verdict import Verdict

SYSTEM = "system"
COLUMNS = (
    "id, state, request_json, verdict_json, created_at, expires_at, decided_by, decided_at, decision_reason,"
    " claimed_at"
)


class ReviewState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


DECIDED = (ReviewState.APPROVED, ReviewState.REJECTED, ReviewState.EXPIRED)


@dataclass(frozen=True)
class ReviewItem:
    id: str
    request: GenerationRequest
    verdict: Verdict
    state: ReviewState
    created_at: float
    expires_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    claimed_at: float | None = None

    @property
    def requester(self) -> Requester:
        return self.request.requester

    @property
    def target(self) -> str:
        """How the audit log names this item."""
        return f"review:{self.id}"


class ReviewQueue:
    def __init__(self, db: ModerationDatabase, *, expiry_s: float) -> None:
        self._db = db
        self.expiry_s = expiry_s

    async def submit(self, request: GenerationRequest, verdict: Verdict) -> ReviewItem:
        return await self._db.run(self._insert, request, verdict)

    async def get(self, item_id: str) -> ReviewItem:
        item = await self._db.run(_select_one, item_id)
        if item is None:
            raise ReviewItemNotFound(f"no review item with id {item_id!r}")
        return item

    async def list(self, state: ReviewState | None = ReviewState.PENDING, limit: int = 50) -> list[ReviewItem]:
        """Items in `state` (None: all), oldest first; pending items past expiry are expired first."""
        await self.expire_due()
        return await self._db.run(_select_many, state, limit)

    async def approve(self, item_id: str, moderator: str, reason: str = "") -> ReviewItem:
        return await self._db.run(self._decide, item_id, ReviewState.APPROVED, moderator, reason)

    async def reject(self, item_id: str, moderator: str, reason: str = "") -> ReviewItem:
        return await self._db.run(self._decide, item_id, ReviewState.REJECTED, moderator, reason)

    async def expire_due(self) -> int:
        """Mark pending items past their expiry as expired; returns how many."""
        return await self._db.run(self._expire_due)

    async def claim_decided(self, states: Sequence[ReviewState] = DECIDED,
                            platforms: Sequence[str] | None = None) -> list[ReviewItem]:
        """Hand over decided items not yet handed to anyone, each exactly once (across processes). With
        `platforms`, only items whose requester is on one of them (a process claims only what it can deliver)."""
        return await self._db.run(self._claim, tuple(states), None if platforms is None else tuple(platforms))

    async def claim_approved(self) -> list[ReviewItem]:
        return await self.claim_decided((ReviewState.APPROVED,))

    async def claim_rejected(self) -> list[ReviewItem]:
        """Rejected and expired items: the requester is told either way."""
        return await self.claim_decided((ReviewState.REJECTED, ReviewState.EXPIRED))

    # -- in the database thread -------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, request: GenerationRequest, verdict: Verdict) -> ReviewItem:
        now = self._db.clock()
        while True:  # ids are short enough to type; retry the rare collision
            item = ReviewItem(new_id(), request, verdict, ReviewState.PENDING, now, now + self.expiry_s)
            try:
                db.execute(
                    "INSERT INTO review_items (id, user_key, platform, state, request_json, verdict_json,"
                    " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (item.id, request.requester.key, request.requester.platform, item.state.value,
                     request_to_json(request), json.dumps(verdict.to_dict()), now, item.expires_at),
                )
                return item
            except sqlite3.IntegrityError:
                continue

    def _decide(self, db: sqlite3.Connection, item_id: str, state: ReviewState, moderator: str,
                reason: str) -> ReviewItem:
        now = self._db.clock()
        action = "approve" if state is ReviewState.APPROVED else "reject"
        with transaction(db):
            self._expire(db, now)
            item = _select_one(db, item_id)
            if item is None or item.state is not ReviewState.PENDING:
                problem = "unknown item" if item is None else f"already {item.state.value}"
                insert_entry(db, self._db.clock, moderator, action, f"review:{item_id}", FAILED, problem)
            else:
                db.execute(
                    "UPDATE review_items SET state = ?, decided_by = ?, decided_at = ?, decision_reason = ?"
                    " WHERE id = ? AND state = ?",
                    (state.value, moderator, now, reason, item_id, ReviewState.PENDING.value),
                )
                insert_entry(db, self._db.clock, moderator, action, item.target, OK, reason)
        if item is None:
            raise ReviewItemNotFound(f"no review item with id {item_id!r}")
        if item.state is ReviewState.EXPIRED:
            raise ReviewExpired(item)
        if item.state is not ReviewState.PENDING:
            raise AlreadyDecided(item)
        return _select_one(db, item_id) or item

    def _expire_due(self, db: sqlite3.Connection) -> int:
        with transaction(db):
            return self._expire(db, self._db.clock())

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        return db.execute(
            "UPDATE review_items SET state = ?, decided_by = ?, decided_at = ? WHERE state = ? AND expires_at <= ?",
            (ReviewState.EXPIRED.value, SYSTEM, now, ReviewState.PENDING.value, now),
        ).rowcount

    def _claim(self, db: sqlite3.Connection, states: tuple[ReviewState, ...],
               platforms: tuple[str, ...] | None) -> list[ReviewItem]:
        now = self._db.clock()
        token = new_id(8)
        where = f"claim_token IS NULL AND state IN ({', '.join('?' for _ in states)})"
        params: list[object] = [s.value for s in states]
        if platforms is not None:
            where += f" AND platform IN ({', '.join('?' for _ in platforms)})" if platforms else " AND 1 = 0"
            params += platforms
        with transaction(db):
            self._expire(db, now)
            db.execute(f"UPDATE review_items SET claim_token = ?, claimed_at = ? WHERE {where}", (token, now, *params))
            rows = db.execute(
                f"SELECT {COLUMNS} FROM review_items WHERE claim_token = ? ORDER BY decided_at, id", (token,)
            ).fetchall()
        return [_item_from_row(row) for row in rows]


def _select_one(db: sqlite3.Connection, item_id: str) -> ReviewItem | None:
    row = db.execute(f"SELECT {COLUMNS} FROM review_items WHERE id = ?", (item_id,)).fetchone()
    return _item_from_row(row) if row else None


def _select_many(db: sqlite3.Connection, state: ReviewState | None, limit: int) -> list[ReviewItem]:
    if state is None:
        rows = db.execute(f"SELECT {COLUMNS} FROM review_items ORDER BY created_at, id LIMIT ?", (limit,))
    else:
        rows = db.execute(
            f"SELECT {COLUMNS} FROM review_items WHERE state = ? ORDER BY created_at, id LIMIT ?",
            (state.value, limit),
        )
    return [_item_from_row(row) for row in rows.fetchall()]


def _item_from_row(row: tuple) -> ReviewItem:
    item_id, state, request_json, verdict_json, created, expires, by, at, reason, claimed = row
    return ReviewItem(
        id=item_id, request=request_from_json(request_json), verdict=Verdict.from_dict(json.loads(verdict_json)),
        state=ReviewState(state), created_at=created, expires_at=expires, decided_by=by, decided_at=at,
        decision_reason=reason, claimed_at=claimed,
    )
