"""Who is posting which finished job to chat, in the database: one claimant per job across every process.

    deliveries = Deliveries(database)
    if await deliveries.claim(job_id, owner, lease_s=120):     # False: another process (or task) has it
        try:
            await post_images(...)                              # renew(job_id, owner, lease_s) if it runs long
        except PlatformError as exc:
            await deliveries.record_failure(job_id, owner, str(exc))   # retried after 1, 2, 4 ... min, max 1 h
        else:
            await deliveries.mark_delivered(job_id, owner)
    for job_id in await deliveries.due("discord"):               # the sweep: done jobs nobody is posting
        ...

One row per job (the `deliveries` table, primary key `job_id`). States: pending (waiting, or waiting for its retry
time) → delivering (claimed: `owner` holds it until `lease_until`) → delivered, or failed (given up). A claim
whose lease ran out (its process died) can be taken by anyone; `renew` keeps a long post alive. Only the owner
can renew, release, record a failure, give up or mark its claim delivered. Times are Unix seconds.

Owners are `host:pid:token` (`process_owner()`), so a restarted process need not wait out the lease of the one
that was killed before it: `release_abandoned(owner_is_gone)` gives back the claims of dead processes on this host.
"""

from __future__ import annotations

import asyncio
import enum
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Row, and_, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.tables import deliveries, jobs

JOB_DONE = "done"
"""`JobState.DONE.value` (engine/requests.py): the storage layer does not import the engine (a test checks)."""
FIRST_RETRY_S = 60.0
MAX_RETRY_S = 3600.0


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up (posts kept failing for longer than the conversation allows): never offered again."""


@dataclass(frozen=True)
class Delivery:
    job_id: str
    platform: str
    state: DeliveryState
    owner: str | None
    lease_until: float | None
    attempts: int
    """Failed attempts so far."""
    next_retry_at: float | None
    last_error: str | None
    first_failed_at: float | None
    """When its posts began to fail (None while none has)."""


class Deliveries:
    def __init__(
        self,
        database: Database,
        *,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self._clock = clock

    async def claim(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Take the job's delivery for `lease_s` seconds; True only for the one claimant that got it. Fails for
        a job not in the job store, one already delivered, and one another owner holds a live lease on.
        Ignores the retry time: the sweep asks `due()` first, a job's own follower may post at once."""
        now = self._clock()
        async with self._database.write() as db:
            await self._ensure_row(db, job_id, now)
            # Atomic on both databases: SQLite runs one writer at a time (BEGIN IMMEDIATE); on PostgreSQL a
            # concurrent UPDATE of the row waits for ours, then re-checks this WHERE and matches nothing.
            taken = await db.execute(
                update(deliveries)
                .where(deliveries.c.job_id == job_id, _claimable(now))
                .values(state=DeliveryState.DELIVERING.value, owner=owner, lease_until=now + lease_s, updated_at=now)
            )
        return taken.rowcount == 1

    async def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend the owner's lease; False if the claim is no longer the owner's."""
        now = self._clock()
        return await self._update_own(job_id, owner, {"lease_until": now + lease_s, "updated_at": now})

    async def release(self, job_id: str, owner: str) -> bool:
        """Give the claim back without counting a failure (e.g. shutting down): claimable at once."""
        return await self._update_own(job_id, owner, _unclaimed(self._clock()))

    async def record_failure(self, job_id: str, owner: str, error: str) -> float | None:
        """The owner's post failed: release the claim and set the retry time, doubling from `first_retry_s` with
        each failure up to `max_retry_s`. Returns the retry time (None if the claim was not the owner's)."""
        now = self._clock()
        async with self._database.write() as db:
            row = (
                await db.execute(select(deliveries.c.attempts).where(*_owned_by(job_id, owner)).with_for_update())
            ).first()
            if row is None:
                return None
            attempts = row.attempts + 1
            retry_at = now + min(self.first_retry_s * 2 ** (attempts - 1), self.max_retry_s)
            await db.execute(
                update(deliveries)
                .where(*_owned_by(job_id, owner))
                .values(**_unclaimed(now), **_failure(error, now), attempts=attempts, next_retry_at=retry_at)
            )
        return retry_at

    async def release_after_failure(self, job_id: str, owner: str, error: str) -> bool:
        """Give the claim back after a failed post without a retry time (a follower's: the sweep may try at
        once), noting the error and when failures began."""
        return await self._update_own(job_id, owner, _unclaimed(self._clock()) | _failure(error, self._clock()))

    async def give_up(self, job_id: str, owner: str, error: str) -> bool:
        """The owner stops trying: the delivery is failed for good, with its reason, and never offered again."""
        now = self._clock()
        values = {"state": DeliveryState.FAILED.value, "owner": None, "lease_until": None, "next_retry_at": None}
        return await self._update_own(job_id, owner, values | _failure(error, now) | {"updated_at": now})

    async def mark_delivered(self, job_id: str, owner: str) -> bool:
        """The owner posted the result: the job is never offered again. False if the claim was not the owner's
        (its lease ran out and someone else took it: they may post it too, so say so in the log)."""
        now = self._clock()
        done: dict[str, object] = {
            "state": DeliveryState.DELIVERED.value,
            "lease_until": None,
            "next_retry_at": None,
            "updated_at": now,
        }
        return await self._update_own(job_id, owner, done)

    async def due(self, platform: str, now: float | None = None) -> list[str]:
        """Ids of done jobs on `platform` not delivered, held by no live claim, and past their retry time (a job
        never tried has no row yet and is due), oldest first."""
        now = self._clock() if now is None else now
        query = (
            select(jobs.c.id)
            .select_from(jobs.outerjoin(deliveries, deliveries.c.job_id == jobs.c.id))
            .where(jobs.c.platform == platform, jobs.c.state == JOB_DONE)
            .where(
                or_(
                    deliveries.c.job_id.is_(None),
                    and_(_claimable(now), or_(deliveries.c.next_retry_at.is_(None), deliveries.c.next_retry_at <= now)),
                )
            )
            .order_by(jobs.c.created_at)
        )
        async with self._database.read() as db:
            return list((await db.execute(query)).scalars())

    async def release_abandoned(self, abandoned: Callable[[str], bool]) -> list[str]:
        """Give back the live claims whose owner `abandoned(owner)` says is gone (e.g. `owner_is_gone`: a process
        of this host that died holding them); returns their job ids."""
        now = self._clock()
        live = select(deliveries.c.job_id, deliveries.c.owner).where(
            deliveries.c.state == DeliveryState.DELIVERING.value, deliveries.c.lease_until > now
        )
        async with self._database.read() as db:
            rows = (await db.execute(live)).all()
        owners = {row.owner for row in rows}
        # `owner_is_gone` reads /proc: off the event loop, once per owner.
        gone = await asyncio.to_thread(lambda: {owner for owner in owners if abandoned(owner)})
        return [row.job_id for row in rows if row.owner in gone and await self.release(row.job_id, row.owner)]

    async def get(self, job_id: str) -> Delivery | None:
        async with self._database.read() as db:
            row = (await db.execute(select(*deliveries.c).where(deliveries.c.job_id == job_id))).first()
        return _delivery(row) if row else None

    # ---- internals -----------------------------------------------------------------------------------------

    async def _ensure_row(self, db: AsyncConnection, job_id: str, now: float) -> None:
        """The job's row, made from the job store's row the first time (no job there: no row, no claim)."""
        insert = self._database.insert(deliveries).from_select(
            ["job_id", "platform", "state", "attempts", "updated_at"],
            select(jobs.c.id, jobs.c.platform, literal(DeliveryState.PENDING.value), literal(0), literal(now)).where(
                jobs.c.id == job_id
            ),
        )
        await db.execute(insert.on_conflict_do_nothing(index_elements=[deliveries.c.job_id]))

    async def _update_own(self, job_id: str, owner: str, values: dict[str, object]) -> bool:
        return await self._database.run(update(deliveries).where(*_owned_by(job_id, owner)).values(**values)) == 1


def process_owner() -> str:
    """A claimant name for this process: its host, its pid and a token (a pid can be reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_gone(owner: str, me: str) -> bool:
    """Whether `owner` (from `process_owner()`) was a process of this host that no longer runs. Owners on other
    hosts are never judged gone: their leases run out instead."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if owner == me or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid == os.getpid() or not _process_runs(pid)  # our own pid under another token: an earlier process


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a killed child not yet reaped by its parent is a zombie: it answers signals, yet runs no more
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _failure(error: str, now: float) -> dict[str, object]:
    return {"last_error": error[:2000], "first_failed_at": func.coalesce(deliveries.c.first_failed_at, now)}


def _claimable(now: float) -> ColumnElement[bool]:
    """Neither delivered nor given up, and nobody holds a live lease on it."""
    return and_(
        deliveries.c.state.not_in([DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]),
        or_(deliveries.c.owner.is_(None), deliveries.c.lease_until <= now),
    )


def _owned_by(job_id: str, owner: str) -> tuple[ColumnElement[bool], ...]:
    return (
        deliveries.c.job_id == job_id,
        deliveries.c.owner == owner,
        deliveries.c.state == DeliveryState.DELIVERING.value,
    )


def _unclaimed(now: float) -> dict[str, object]:
    return {"state": DeliveryState.PENDING.value, "owner": None, "lease_until": None, "updated_at": now}


def _delivery(row: Row) -> Delivery:
    return Delivery(
        job_id=row.job_id,
        platform=row.platform,
        state=DeliveryState(row.state),
        owner=row.owner,
        lease_until=row.lease_until,
        attempts=row.attempts,
        next_retry_at=row.next_retry_at,
        last_error=row.last_error,
        first_failed_at=row.first_failed_at,
    )
