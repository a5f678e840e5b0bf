"""Sign-in attempts, rate-limited with the same machinery as prompts (moderation/limits.py).

Each attempt (a password posted, an OAuth callback) counts once against the client's address and, for local
accounts, once against the account name, so that neither one address guessing many names nor many addresses
guessing one name get far: `dashboard.sign_in_attempts` within `dashboard.sign_in_window_s`, all at once at most.
Scaled out (`engine.queue = "redis"`) the counts live in Redis, as the prompts' do: several web processes behind
one address allow that many attempts between them, not that many each.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from config.settings import DashboardSettings, LimitSettings, Settings
from moderation.limits import InMemoryRateLimiter, RateLimiter, close_limiter

UNLIMITED = 1_000_000_000


class ThrottleUnavailable(Exception):
    """The shared count could not be reached (Redis down): no attempt is let through uncounted."""


class SignInThrottle:
    def __init__(self, limiter: RateLimiter, unreachable: tuple[type[Exception], ...] = ()) -> None:
        """`unreachable`: what `limiter` raises when its shared count cannot be reached."""
        self._limiter = limiter
        self._unreachable = unreachable

    @classmethod
    def for_service(cls, settings: Settings, clock: Callable[[], float] = time.time) -> SignInThrottle:
        limits = sign_in_limits(settings.dashboard)
        if settings.engine.queue != "redis":
            return cls(InMemoryRateLimiter(limits, clock))
        # Scale-out only: an embedded service never loads redis-py (tests/test_boundaries.py says why).
        from redis.exceptions import RedisError

        from moderation.limits_redis import RedisRateLimiter

        engine = settings.engine
        # Redis's own clock (one for every host) unless a test moves time by hand.
        shared_clock = None if clock is time.time else clock
        prefix = f"{engine.redis_prefix}:sign-in"
        return cls(RedisRateLimiter.from_url(limits, engine.redis_url, prefix, shared_clock), (RedisError, OSError))

    async def attempt(self, address: str, account: str | None = None) -> float | None:
        """None when this attempt may go ahead; otherwise the seconds until one may."""
        user_key = f"address:{address}"
        try:
            decision = await self._limiter.acquire(user_key, f"account:{account}" if account else None)
            await self._limiter.job_finished(user_key)  # an attempt is not a job: no slot stays taken
        except self._unreachable as exc:
            raise ThrottleUnavailable(f"sign-in attempts cannot be counted: {exc}") from exc
        if decision.allowed:
            return None
        return decision.retry_after_s or 1.0

    async def close(self) -> None:
        await close_limiter(self._limiter)


def sign_in_limits(settings: DashboardSettings) -> LimitSettings:
    attempts = settings.sign_in_attempts
    return LimitSettings(
        prompts_per_window=attempts,  # per address
        window_s=settings.sign_in_window_s,
        burst=attempts,
        server_prompts_per_window=attempts,  # per account name (the limiter's "server" window)
        max_queued_per_user=UNLIMITED,
        daily_quota=UNLIMITED,
    )
