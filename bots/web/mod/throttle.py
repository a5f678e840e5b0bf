"""Sign-in attempts, rate-limited with the same machinery as prompts (moderation/limits.py).

Each attempt (a password posted, an OAuth callback) counts once against the client's address and, for local
accounts, once against the account name, so that neither one address guessing many names nor many addresses
guessing one name get far: `dashboard.sign_in_attempts` within `dashboard.sign_in_window_s`, all at once at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from config.settings import DashboardSettings, LimitSettings
from moderation.limits import InMemoryRateLimiter

UNLIMITED = 1_000_000_000


class SignInThrottle:
    def __init__(self, settings: DashboardSettings, clock: Callable[[], float] = time.time) -> None:
        attempts = settings.sign_in_attempts
        limits = LimitSettings(
            prompts_per_window=attempts,  # per address
            window_s=settings.sign_in_window_s,
            burst=attempts,
            server_prompts_per_window=attempts,  # per account name (the limiter's "server" window)
            max_queued_per_user=UNLIMITED,
            daily_quota=UNLIMITED,
        )
        self._limiter = InMemoryRateLimiter(limits, clock)

    async def attempt(self, address: str, account: str | None = None) -> float | None:
        """None when this attempt may go ahead; otherwise the seconds until one may."""
        user_key = f"address:{address}"
        decision = await self._limiter.acquire(user_key, f"account:{account}" if account else None)
        await self._limiter.job_finished(user_key)  # an attempt is not a job: no slot stays taken
        if decision.allowed:
            return None
        return decision.retry_after_s or 1.0
