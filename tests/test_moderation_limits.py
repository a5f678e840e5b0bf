"""Rate limits: burst, sliding window, server window, daily quota, queue cap, exact counting under concurrency."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from config.settings import LimitSettings
from moderation.limits import InMemoryRateLimiter, LimitDecision
from moderation.messages import admission_message, duration
from tests.moderation_support import ManualClock

DEFAULTS = LimitSettings()  # 5 per 600 s, burst 2, server 60 per 600 s, 2 in flight, 100 a day


def limiter(clock: ManualClock, **changes: object) -> InMemoryRateLimiter:
    return InMemoryRateLimiter(replace(DEFAULTS, max_queued_per_user=1000, **changes), clock)


async def test_burst_then_one_every_two_minutes() -> None:
    clock = ManualClock()
    limits = limiter(clock)
    assert (await limits.acquire("discord:1")).allowed
    assert (await limits.acquire("discord:1")).allowed
    refused = await limits.acquire("discord:1")
    assert refused == LimitDecision(False, "burst", pytest.approx(120.0))
    clock.advance(119.0)
    assert not (await limits.acquire("discord:1")).allowed
    clock.advance(1.0)
    assert (await limits.acquire("discord:1")).allowed
    assert (await limits.acquire("discord:2")).allowed  # other users are not affected


async def test_never_more_than_five_in_any_ten_minutes() -> None:
    clock = ManualClock()
    limits = limiter(clock, burst=10)
    for _ in range(5):
        assert (await limits.acquire("slack:U1")).allowed
        clock.advance(60.0)
    refused = await limits.acquire("slack:U1")  # t = 300 s; the first admission leaves the window at 600 s
    assert refused == LimitDecision(False, "user_window", pytest.approx(300.0))
    clock.advance(300.0)
    assert (await limits.acquire("slack:U1")).allowed


async def test_default_semantics_over_ten_minutes() -> None:
    clock = ManualClock()
    limits = limiter(clock)
    admitted = []
    for second in range(0, 600, 10):  # someone retrying every 10 s for 10 minutes
        if (await limits.acquire("discord:1")).allowed:
            admitted.append(second)
        clock.advance(10.0)
    # Two back to back; the bucket refills one token per 120 s; at 480 s the bucket allows but five are
    # already inside the ten-minute window.
    assert admitted == [0, 10, 120, 240, 360]


async def test_server_window_counts_everyone_on_the_server() -> None:
    clock = ManualClock()
    limits = limiter(clock, server_prompts_per_window=3)
    for user in ("a", "b", "c"):
        assert (await limits.acquire(f"discord:{user}", "discord:guild")).allowed
    refused = await limits.acquire("discord:d", "discord:guild")
    assert (refused.allowed, refused.limit) == (False, "server_window")
    assert (await limits.acquire("discord:d", "discord:other-guild")).allowed
    assert (await limits.acquire("discord:d")).allowed  # no server (a DM): no server limit


async def test_daily_quota_resets_at_midnight_utc() -> None:
    clock = ManualClock(start=86400.0 * 20000 + 86400.0 - 3600.0)  # 23:00 UTC
    limits = limiter(clock, daily_quota=2, burst=5)
    assert (await limits.acquire("discord:1")).allowed
    assert (await limits.acquire("discord:1")).allowed
    refused = await limits.acquire("discord:1")
    assert refused == LimitDecision(False, "daily_quota", pytest.approx(3600.0))
    clock.advance(3600.0)
    assert (await limits.acquire("discord:1")).allowed


async def test_queue_cap_waits_for_a_job_to_finish() -> None:
    clock = ManualClock()
    limits = InMemoryRateLimiter(replace(DEFAULTS, burst=10, prompts_per_window=10), clock)
    assert (await limits.acquire("discord:1")).allowed
    assert (await limits.acquire("discord:1")).allowed
    refused = await limits.acquire("discord:1")
    assert refused == LimitDecision(False, "queue", None)
    assert await limits.active_jobs("discord:1") == 2
    await limits.job_finished("discord:1")
    assert (await limits.acquire("discord:1")).allowed
    await limits.job_started("discord:1")  # e.g. an approved review item, which bypassed acquire
    assert await limits.active_jobs("discord:1") == 3


async def test_exempt_users_skip_limits_but_hold_a_slot() -> None:
    limits = limiter(ManualClock(), burst=1, prompts_per_window=1)
    for _ in range(20):
        assert (await limits.acquire("discord:admin", "discord:guild", exempt=True)).allowed
    assert await limits.active_jobs("discord:admin") == 20


async def test_refund_undoes_an_admission() -> None:
    limits = limiter(ManualClock())
    assert (await limits.acquire("discord:1", "discord:g")).allowed
    assert (await limits.acquire("discord:1", "discord:g")).allowed
    await limits.refund("discord:1", "discord:g")
    assert (await limits.acquire("discord:1", "discord:g")).allowed
    assert not (await limits.acquire("discord:1", "discord:g")).allowed


@pytest.mark.parametrize(("burst", "window", "queue", "expected"), [(2, 5, 1000, 2), (10, 5, 1000, 5), (10, 10, 3, 3)])
async def test_concurrent_requests_admit_exactly_the_allowed_number(
    burst: int, window: int, queue: int, expected: int
) -> None:
    settings = replace(DEFAULTS, burst=burst, prompts_per_window=window, max_queued_per_user=queue)
    limits = InMemoryRateLimiter(settings, ManualClock())
    decisions = await asyncio.gather(*(limits.acquire("discord:1", "discord:g") for _ in range(100)))
    assert sum(d.allowed for d in decisions) == expected


def test_counting_is_exact_across_threads() -> None:
    limits = InMemoryRateLimiter(
        replace(DEFAULTS, burst=50, prompts_per_window=50, max_queued_per_user=1000), ManualClock()
    )
    admitted: list[bool] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        admitted.extend(limits.acquire_now("discord:1").allowed for _ in range(25))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 50 and len(admitted) == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 s"), (59, "59 s"), (192, "3 min 12 s"), (120, "2 min"), (5400, "1 h 30 min"), (7200, "2 h")],
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_refusal_says_when_to_retry() -> None:
    assert admission_message("rate_limited", "user_window", 192.0) == (
        "You've reached the limit of 5 prompts per 10 min. Try again in 3 min 12 s."
    )
    assert "Try again in 2 min" in admission_message("rate_limited", "burst", 119.5)
