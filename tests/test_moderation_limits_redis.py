"""The Redis rate limiter (scale-out mode) on the real Redis: the same decisions as the in-memory one, step for
step, and exact counts when two frontends (two limiters, two connections) admit concurrently."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from config.settings import LimitSettings
from moderation.admission import Admission
from moderation.limits import InMemoryRateLimiter, LimitDecision
from moderation.limits_redis import RedisRateLimiter
from tests.moderation_support import ManualClock
from tests.redis_support import REDIS_URL, redis_prefix  # noqa: F401 (a fixture)
from tests.support import make_settings

SMALL = LimitSettings(
    prompts_per_window=4, window_s=60.0, burst=3, server_prompts_per_window=5, max_queued_per_user=5, daily_quota=60
)


def client() -> aioredis.Redis:
    return aioredis.Redis.from_url(REDIS_URL, decode_responses=True)


def same(a: LimitDecision, b: LimitDecision) -> bool:
    if (a.allowed, a.limit) != (b.allowed, b.limit):
        return False
    if a.retry_after_s is None or b.retry_after_s is None:
        return a.retry_after_s is b.retry_after_s
    return a.retry_after_s == pytest.approx(b.retry_after_s, abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("daily_quota", [60, 8])  # every limit refuses somewhere in these runs
async def test_every_decision_matches_the_in_memory_limiter(
    seed: int,
    daily_quota: int,
    redis_prefix: str,  # noqa: F811
) -> None:
    rng = random.Random(seed)
    clock = ManualClock(start=86400.0 * 20000 + 86400.0 - 300.0)  # crosses midnight UTC on the way
    settings = replace(SMALL, daily_quota=daily_quota)
    memory = InMemoryRateLimiter(settings, clock)
    shared = RedisRateLimiter(settings, client(), redis_prefix, clock)
    users, servers = ["discord:1", "discord:2"], ["discord:g", "discord:g", None]
    try:
        for step in range(400):
            user, server = rng.choice(users), rng.choice(servers)
            action = rng.random()
            if action < 0.45:
                exempt = rng.random() < 0.05
                expected = await memory.acquire(user, server, exempt=exempt)
                got = await shared.acquire(user, server, exempt=exempt)
                assert same(got, expected), f"step {step}: {got} != {expected}"
            elif action < 0.5:
                await memory.refund(user, server)
                await shared.refund(user, server)
            elif action < 0.55:
                await memory.job_started(user)
                await shared.job_started(user)
            else:
                await memory.job_finished(user)
                await shared.job_finished(user)
            assert await shared.active_jobs(user) == await memory.active_jobs(user), f"step {step}"
            clock.advance(rng.choice([0.0, 0.0, 0.5, 1.0, 3.0, 61.0]))
    finally:
        await shared.close()


@pytest.mark.parametrize(("burst", "window", "queue", "expected"), [(2, 5, 1000, 2), (10, 5, 1000, 5), (10, 10, 3, 3)])
async def test_two_frontends_admitting_at_once_are_counted_exactly(
    burst: int,
    window: int,
    queue: int,
    expected: int,
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = replace(LimitSettings(), burst=burst, prompts_per_window=window, max_queued_per_user=queue)
    frontends = [RedisRateLimiter(settings, client(), redis_prefix) for _ in range(2)]  # Redis's clock
    try:
        decisions = await asyncio.gather(*(frontends[i % 2].acquire("discord:1", "discord:g") for i in range(200)))
        assert sum(decision.allowed for decision in decisions) == expected
        assert await frontends[0].active_jobs("discord:1") == expected
        for _ in range(expected):
            await frontends[1].job_finished("discord:1")
        assert await frontends[0].active_jobs("discord:1") == 0
    finally:
        for limiter in frontends:
            await limiter.close()


async def test_scale_out_admission_counts_in_redis(tmp_path: Path, redis_prefix: str) -> None:  # noqa: F811
    settings = make_settings(tmp_path, "builtin:tiny")
    engine = replace(settings.engine, queue="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix)
    settings = replace(settings, engine=engine, limits=replace(settings.limits, burst=1))
    first, second = [await Admission.open(settings, warm_up=False) for _ in range(2)]
    try:
        assert isinstance(first.limiter, RedisRateLimiter)
        assert (await first.limiter.acquire("discord:9")).allowed
        refused = await second.limiter.acquire("discord:9")  # another frontend sees the same bucket
        assert not refused.allowed and refused.limit == "burst"
    finally:
        await first.close()
        await second.close()
