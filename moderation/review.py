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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Row, Update, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.requests import GenerationRequest, Requester
from engine.serialize import request_from_json, request_to_json
from moderation.audit import FAILED, OK, insert_entry
from moderation.errors import AlreadyDecided, ReviewExpired, ReviewItemNotFound
from moderation.ids import new_id
from moderation.verdict import Verdict
from storage.database import Database
from storage.tables import review_items

SYSTEM = "system"
COLUMNS = tuple(
    review_items.c[name]
    for name in (
        "id",
        "state",
        "request_json",
        "verdict_json",
        "created_at",
        "expires_at",
        "decided_by",
        "decided_at",
        "decision_reason",
        "claimed_at",
    )
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


ReviewItems = list[ReviewItem]
"""(In ReviewQueue's annotations `list` names its method, hence the alias.)"""


class ReviewQueue:
    def __init__(self, database: Database, *, expiry_s: float, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self.expiry_s = expiry_s
        self.clock = clock

    async def submit(self, request: GenerationRequest, verdict: Verdict) -> ReviewItem:
        now = self.clock()
        insert = self._database.insert(review_items).on_conflict_do_nothing(index_elements=[review_items.c.id])
        while True:  # ids are short enough to type; retry the rare collision
            item = ReviewItem(new_id(), request, verdict, ReviewState.PENDING, now, now + self.expiry_s)
            inserted = await self._database.run(
                insert.values(
                    id=item.id,
                    user_key=request.requester.key,
                    platform=request.requester.platform,
                    state=item.state.value,
                    request_json=request_to_json(request),
                    verdict_json=json.dumps(verdict.to_dict()),
                    created_at=now,
                    expires_at=item.expires_at,
                )
            )
            if inserted == 1:
                return item

    async def stage_post(self, item_id: str, post_json: str, owner: str, lease_s: float) -> None:
        """Keep what the moderators' post of this item shows (opaque JSON), before it is posted, leased to
        `owner` (the process posting it) for `lease_s`: no other process takes it over meanwhile."""
        values = {"post_json": post_json, "post_owner": owner, "post_lease_until": self.clock() + lease_s}
        await self._database.run(_set(item_id, **values))

    async def mark_posted(self, item_id: str) -> None:
        await self._database.run(_set(item_id, posted_at=self.clock()))

    async def claim_unposted(self, owner: str, lease_s: float, platforms: Sequence[str]) -> list[tuple[str, str]]:
        """Take over the staged posts of pending items that were never made and whose lease has run out (their
        process died, or stopped and released them), on `platforms`: (id, post JSON) each, oldest first, each
        leased to `owner` for `lease_s`, and to no one else (across processes, as `claim_decided`)."""
        now = self.clock()
        lease_over = or_(review_items.c.post_lease_until.is_(None), review_items.c.post_lease_until <= now)
        claimable = and_(_unposted(), lease_over, review_items.c.platform.in_(list(platforms)))
        if not await self._any(claimable):
            return []
        claim = (
            update(review_items)
            .where(claimable)
            .values(post_owner=owner, post_lease_until=now + lease_s)
            .returning(review_items.c.id, review_items.c.post_json, review_items.c.created_at)
        )
        rows = sorted(await self._database.run_returning(claim), key=lambda row: (row.created_at, row.id))
        return [(row.id, row.post_json) for row in rows]

    async def renew_posts(self, owner: str, item_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend `owner`'s lease on these staged posts; returns the ids it still holds (the others were made,
        or taken over by another process after the lease ran out: this one must not post them)."""
        if not item_ids:
            return set()
        renew = (
            update(review_items)
            .where(_unposted(), review_items.c.id.in_(list(item_ids)), review_items.c.post_owner == owner)
            .values(post_lease_until=self.clock() + lease_s)
            .returning(review_items.c.id)
        )
        return {row.id for row in await self._database.run_returning(renew)}

    async def release_posts(self, owner: str) -> int:
        """Hand back `owner`'s unmade posts (a process stopping), for the next process to take over at once."""
        release = update(review_items).where(_unposted(), review_items.c.post_owner == owner)
        return await self._database.run(release.values(post_lease_until=None))

    async def get(self, item_id: str) -> ReviewItem:
        async with self._database.read() as db:
            item = await _select_one(db, item_id)
        if item is None:
            raise ReviewItemNotFound(f"no review item with id {item_id!r}")
        return item

    async def list(self, state: ReviewState | None = ReviewState.PENDING, limit: int = 50) -> ReviewItems:
        """Items in `state` (None: all), oldest first; pending items past expiry are expired first."""
        await self.expire_due()
        query = select(*COLUMNS).order_by(review_items.c.created_at, review_items.c.id).limit(limit)
        if state is not None:
            query = query.where(review_items.c.state == state.value)
        async with self._database.read() as db:
            rows = (await db.execute(query)).all()
        return [_item_from_row(row) for row in rows]

    async def approve(self, item_id: str, moderator: str, reason: str = "") -> ReviewItem:
        return await self._decide(item_id, ReviewState.APPROVED, moderator, reason)

    async def reject(self, item_id: str, moderator: str, reason: str = "") -> ReviewItem:
        return await self._decide(item_id, ReviewState.REJECTED, moderator, reason)

    async def expire_due(self) -> int:
        """Mark pending items past their expiry as expired; returns how many."""
        now = self.clock()
        if not await self._any(_expiring(now)):
            return 0
        return await self._database.run(_expiry(now))

    async def claim_decided(
        self, states: Sequence[ReviewState] = DECIDED, platforms: Sequence[str] | None = None
    ) -> ReviewItems:
        """Hand over decided items not yet handed to anyone, each exactly once (across processes). With
        `platforms`, only items whose requester is on one of them (a process claims only what it can deliver)."""
        now, token = self.clock(), new_id(8)
        claimable = and_(review_items.c.claim_token.is_(None), review_items.c.state.in_([s.value for s in states]))
        if platforms is not None:  # an empty list claims nothing (SQLAlchemy renders an empty IN as false)
            claimable = and_(claimable, review_items.c.platform.in_(list(platforms)))
        if not await self._any(or_(claimable, _expiring(now))):
            return []
        claim = update(review_items).where(claimable)
        async with self._database.write() as db:
            await self._expire(db, now)
            # One UPDATE stamps every unclaimed row with our token; a concurrent claimant's UPDATE then finds
            # claim_token set (SQLite: it waited for our write lock; PostgreSQL: it re-checks the locked rows).
            await db.execute(claim.values(claim_token=token, claimed_at=now))
            rows = (
                await db.execute(
                    select(*COLUMNS)
                    .where(review_items.c.claim_token == token)
                    .order_by(review_items.c.decided_at, review_items.c.id)
                )
            ).all()
        return [_item_from_row(row) for row in rows]

    async def claim_approved(self) -> ReviewItems:
        return await self.claim_decided((ReviewState.APPROVED,))

    async def claim_rejected(self) -> ReviewItems:
        """Rejected and expired items: the requester is told either way."""
        return await self.claim_decided((ReviewState.REJECTED, ReviewState.EXPIRED))

    # -- inside a transaction ---------------------------------------------------------------------------

    async def _decide(self, item_id: str, state: ReviewState, moderator: str, reason: str) -> ReviewItem:
        now = self.clock()
        action = "approve" if state is ReviewState.APPROVED else "reject"
        async with self._database.write() as db:
            await self._expire(db, now)
            item = await _select_one(db, item_id, for_update=True)
            if item is None or item.state is not ReviewState.PENDING:
                problem = "unknown item" if item is None else f"already {item.state.value}"
                await insert_entry(db, self.clock, moderator, action, f"review:{item_id}", FAILED, problem)
            else:
                await db.execute(
                    update(review_items)
                    .where(review_items.c.id == item_id, review_items.c.state == ReviewState.PENDING.value)
                    .values(state=state.value, decided_by=moderator, decided_at=now, decision_reason=reason)
                )
                await insert_entry(db, self.clock, moderator, action, item.target, OK, reason)
                item = await _select_one(db, item_id) or item
                return item
        if item is None:
            raise ReviewItemNotFound(f"no review item with id {item_id!r}")
        if item.state is ReviewState.EXPIRED:
            raise ReviewExpired(item)
        raise AlreadyDecided(item)

    async def _any(self, condition: ColumnElement[bool]) -> bool:
        """Whether any item meets `condition`. The poller asks this first, every few seconds: a read takes no
        write lock, so a poll that finds nothing to do does not hold up the writes acknowledgements wait on."""
        async with self._database.read() as db:
            return (await db.execute(select(review_items.c.id).where(condition).limit(1))).first() is not None

    @staticmethod
    async def _expire(db: AsyncConnection, now: float) -> int:
        return (await db.execute(_expiry(now))).rowcount


def _set(item_id: str, **values: object) -> Update:
    return update(review_items).where(review_items.c.id == item_id).values(**values)


def _unposted() -> ColumnElement[bool]:
    """Pending items whose staged post to the moderators was never made."""
    return and_(
        review_items.c.state == ReviewState.PENDING.value,
        review_items.c.post_json.is_not(None),
        review_items.c.posted_at.is_(None),
    )


def _expiring(now: float) -> ColumnElement[bool]:
    return and_(review_items.c.state == ReviewState.PENDING.value, review_items.c.expires_at <= now)


def _expiry(now: float) -> Update:
    """Pending items past their expiry become expired."""
    return (
        update(review_items)
        .where(_expiring(now))
        .values(state=ReviewState.EXPIRED.value, decided_by=SYSTEM, decided_at=now)
    )


async def _select_one(db: AsyncConnection, item_id: str, *, for_update: bool = False) -> ReviewItem | None:
    """One item; `for_update` locks its row on PostgreSQL (SQLite's BEGIN IMMEDIATE already holds the lock), so
    two moderators deciding at once see each other's decision."""
    query = select(*COLUMNS).where(review_items.c.id == item_id)
    row = (await db.execute(query.with_for_update() if for_update else query)).first()
    return _item_from_row(row) if row else None


def _item_from_row(row: Row) -> ReviewItem:
    return ReviewItem(
        id=row.id,
        request=request_from_json(row.request_json),
        verdict=Verdict.from_dict(json.loads(row.verdict_json)),
        state=ReviewState(row.state),
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        claimed_at=row.claimed_at,
    )
