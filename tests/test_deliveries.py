"""Delivery bookkeeping in the database: one claimant per job across processes, leases, retries with backoff."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from engine.requests import GenerationRequest, JobState, Requester
from engine.store import JobRecord, JobStore
from storage import deliveries as deliveries_module
from storage.database import Database
from storage.deliveries import Deliveries, DeliveryState, owner_is_gone, process_owner
from tests.moderation_support import ManualClock
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(120)
SLACK = Requester(platform="slack", user_id="U1", server_id="T1", channel_id="C1")
DISCORD = Requester(platform="discord", user_id="111", server_id="g1", channel_id="c1")
CLAIMANTS = 20


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    opened = await Database.open(f"sqlite:///{tmp_path}/imagine.db")
    yield opened
    await opened.close()


async def add_job(
    database: Database,
    job_id: str,
    state: JobState = JobState.DONE,
    requester: Requester = SLACK,
    created_at: float = 1.0,
) -> None:
    await JobStore(database).add(
        JobRecord(
            id=job_id,
            request=GenerationRequest(prompt="a fox", requester=requester),
            seeds=(1, 2, 3, 4),
            width=64,
            height=64,
            steps=1,
            state=state,
            created_at=created_at,
        )
    )


def test_the_done_state_matches_the_engine() -> None:
    assert deliveries_module.JOB_DONE == JobState.DONE.value


async def test_one_claimant_at_a_time_until_the_lease_runs_out(database: Database, clock: ManualClock) -> None:
    await add_job(database, "j1")
    book = Deliveries(database, clock=clock)
    assert await book.claim("j1", "proc-a", lease_s=60)
    assert not await book.claim("j1", "proc-b", lease_s=60)
    assert not await book.claim("j1", "proc-a", lease_s=60)  # not re-entrant: a second task of ours stays out
    clock.advance(59)
    assert await book.renew("j1", "proc-a", lease_s=60)
    assert not await book.renew("j1", "proc-b", lease_s=60)
    clock.advance(59)
    assert not await book.claim("j1", "proc-b", lease_s=60)  # renewed: still a live lease
    clock.advance(2)
    assert await book.claim("j1", "proc-b", lease_s=60)  # proc-a went silent: its lease ran out
    assert not await book.mark_delivered("j1", "proc-a")
    assert await book.mark_delivered("j1", "proc-b")
    clock.advance(3600)
    assert not await book.claim("j1", "proc-c", lease_s=60)  # delivered: never offered again
    delivery = await book.get("j1")
    assert delivery is not None and (delivery.state, delivery.owner) == (DeliveryState.DELIVERED, "proc-b")


async def test_only_jobs_in_the_store_can_be_claimed(database: Database) -> None:
    assert not await Deliveries(database).claim("no-such-job", "proc-a", lease_s=60)
    assert await Deliveries(database).get("no-such-job") is None


async def test_failures_back_off_doubling_up_to_an_hour(database: Database, clock: ManualClock) -> None:
    await add_job(database, "j1")
    book = Deliveries(database, first_retry_s=60, clock=clock)
    waits = []
    for _ in range(9):
        assert await book.claim("j1", "proc-a", lease_s=30)
        retry_at = await book.record_failure("j1", "proc-a", "Slack said 500")
        assert retry_at is not None
        waits.append(retry_at - clock.now)
        clock.advance(retry_at - clock.now)
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    delivery = await book.get("j1")
    assert delivery is not None and (delivery.attempts, delivery.last_error) == (9, "Slack said 500")
    assert delivery.state is DeliveryState.PENDING and delivery.owner is None
    assert await book.record_failure("j1", "proc-a", "not ours any more") is None


async def test_due_lists_done_undelivered_unclaimed_jobs_whose_retry_time_came(
    database: Database, clock: ManualClock
) -> None:
    await add_job(database, "never-tried", created_at=1)
    await add_job(database, "claimed", created_at=2)
    await add_job(database, "failed", created_at=3)
    await add_job(database, "released", created_at=4)
    await add_job(database, "delivered", created_at=5)
    await add_job(database, "running", JobState.RUNNING, created_at=6)
    await add_job(database, "on-discord", requester=DISCORD, created_at=7)
    book = Deliveries(database, first_retry_s=60, clock=clock)
    for job_id in ("claimed", "failed", "released", "delivered"):
        assert await book.claim(job_id, "proc-a", lease_s=300)
    await book.record_failure("failed", "proc-a", "timeout")
    await book.release("released", "proc-a")
    await book.mark_delivered("delivered", "proc-a")

    assert await book.due("slack") == ["never-tried", "released"]
    assert await book.due("slack", clock.now + 60) == ["never-tried", "failed", "released"]
    assert await book.due("slack", clock.now + 300) == ["never-tried", "claimed", "failed", "released"]
    assert await book.due("discord") == ["on-discord"]


async def test_a_delivery_given_up_keeps_its_reason_and_is_never_offered_again(
    database: Database, clock: ManualClock
) -> None:
    await add_job(database, "j1")
    book = Deliveries(database, first_retry_s=60, clock=clock)
    assert await book.claim("j1", "proc-a", lease_s=30)
    assert await book.release_after_failure("j1", "proc-a", "Forbidden: 403")  # a follower's: due at once
    began = clock.now
    assert await book.due("slack") == ["j1"]
    clock.advance(100)
    assert await book.claim("j1", "proc-b", lease_s=30)
    await book.record_failure("j1", "proc-b", "NotFound: Unknown Channel")
    delivery = await book.get("j1")
    assert delivery is not None and delivery.first_failed_at == began  # when failures began, not the latest
    clock.advance(60)
    assert await book.claim("j1", "proc-b", lease_s=30)
    assert not await book.give_up("j1", "proc-a", "not its claim")
    assert await book.give_up("j1", "proc-b", "NotFound: Unknown Channel")
    delivery = await book.get("j1")
    assert delivery is not None
    assert (delivery.state, delivery.owner, delivery.last_error) == (
        DeliveryState.FAILED,
        None,
        "NotFound: Unknown Channel",
    )
    clock.advance(10 * 3600)
    assert await book.due("slack", clock.now) == []
    assert not await book.claim("j1", "proc-c", lease_s=30)


async def test_claims_of_a_process_that_died_on_this_host_are_taken_back(database: Database) -> None:
    """A restart after a kill -9 need not wait out the dead process's lease; a live process keeps its claims."""
    dead = await _exited_child_pid()
    host = socket.gethostname()
    owners = {
        "dead": f"{host}:{dead}:0a1b",
        "alive": f"{host}:{os.getpid()}:elsewhere",  # our pid under another token: an earlier process of ours
        "parent": f"{host}:{os.getppid()}:c0de",  # a process that runs
        "other-host": f"another-host:{dead}:c0de",  # its lease runs out instead
    }
    book = Deliveries(database)
    for job_id, owner in owners.items():
        await add_job(database, job_id)
        assert await book.claim(job_id, owner, lease_s=600)
    me = process_owner()
    assert not owner_is_gone(me, me)
    released = await book.release_abandoned(partial(owner_is_gone, me=me))
    assert sorted(released) == ["alive", "dead"]
    assert await book.claim("dead", me, lease_s=60)
    assert not await book.claim("parent", me, lease_s=60) and not await book.claim("other-host", me, lease_s=60)


async def _exited_child_pid() -> int:
    """The pid of a process that ran, was killed and was reaped: nothing runs under it now."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    assert not owner_is_gone(f"{socket.gethostname()}:{child.pid}:x", process_owner())  # it runs
    child.kill()
    await child.wait()
    return child.pid


async def test_two_processes_racing_for_a_job_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/imagine.db"
    first, second = await Database.open(url), await Database.open(url)
    try:
        await _race(first, second)
    finally:
        await first.close()
        await second.close()


async def test_two_processes_racing_for_a_job_on_postgres(postgres_url: str) -> None:  # noqa: F811
    first, second = await Database.open(postgres_url), await Database.open(postgres_url)
    try:
        await _race(first, second)
    finally:
        await first.close()
        await second.close()


async def _race(first: Database, second: Database) -> None:
    """Many claimants on two Database objects (two connection pools, as two processes have) at once: for each
    job exactly one wins, and a loser's later claim still fails while the winner's lease lives."""
    jobs = [f"job-{i}" for i in range(5)]
    for job_id in jobs:
        await add_job(first, job_id)
    books = [Deliveries(first), Deliveries(second)]
    for job_id in jobs:
        claims = [books[i % 2].claim(job_id, f"owner-{i}", lease_s=600) for i in range(CLAIMANTS)]
        won = [f"owner-{i}" for i, ok in enumerate(await asyncio.gather(*claims)) if ok]
        assert len(won) == 1, f"{job_id}: {won}"
        delivery = await books[1].get(job_id)
        assert delivery is not None and delivery.owner == won[0]
    assert await books[0].due("slack") == []


def test_a_killed_child_not_yet_reaped_counts_as_gone() -> None:
    """A zombie still answers signals (os.kill(pid, 0) succeeds) but runs no more: its claims are taken back."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{socket.gethostname()}:{child.pid}:z0mb"
    try:
        assert not owner_is_gone(owner, process_owner())
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # it has exited; its zombie is left unreaped
        assert owner_is_gone(owner, process_owner())
    finally:
        child.kill()
        child.wait()
