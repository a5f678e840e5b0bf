"""Per-user and per-server rate limits, a daily quota and a cap on a user's jobs in flight.

Semantics (defaults from `[limits]`):
  burst         a token bucket per user holding `burst` (2) prompts, refilled at prompts_per_window/window_s
                (5 per 600 s: one token every 120 s). Two prompts may go back to back; after that one every
                two minutes.
  user window   never more than `prompts_per_window` (5) admitted prompts in any sliding `window_s` (600 s).
  server window never more than `server_prompts_per_window` (60) per server/workspace in any `window_s`
                (requests without a server, e.g. DMs and the CLI, have no server limit).
  daily quota   at most `daily_quota` (100) prompts per user per UTC calendar day; resets at 00:00 UTC.
  queue cap     at most `max_queued_per_user` (2) of a user's jobs queued or running at once. An admitted
                prompt holds one slot until `job_finished()` is called (see moderation.admission).
A prompt is admitted only if every limit allows it, and then it is counted by every limit (all or nothing).
A refusal names the limit and `retry_after_s`: the earliest time at which every failing limit would pass
(None for the queue cap, which waits on a job finishing, not on the clock).

`RateLimiter` is the async interface; `InMemoryRateLimiter` is the embedded implementation (one process). Its
check-and-count runs under one lock with no await inside, so concurrent requests are counted exactly. A Redis
implementation (scale-out mode) fits the same interface with one atomic script per call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from config.settings import LimitSettings

DAY_S = 86400.0
PRUNE_EVERY = 1024  # admissions between sweeps that drop idle users' state


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    limit: str | None = None
    """Which limit refused: "burst", "user_window", "server_window", "daily_quota" or "queue"."""
    retry_after_s: float | None = None


ALLOWED = LimitDecision(True)


class RateLimiter(Protocol):
    async def acquire(self, user_key: str, server_key: str | None = None, *, exempt: bool = False) -> LimitDecision:
        """Admit one prompt if every limit allows it, counting it everywhere; exempt users skip the limits
        but still hold a queue slot (so that `job_finished` stays balanced)."""
        ...

    async def refund(self, user_key: str, server_key: str | None = None) -> None:
        """Undo the counts of the last admitted prompt (e.g. the engine refused the job)."""
        ...

    async def job_started(self, user_key: str) -> None:
        """A job that did not pass `acquire` now occupies a queue slot (approved review items, resumed jobs)."""
        ...

    async def job_finished(self, user_key: str) -> None:
        """A job of this user ended (done, failed, cancelled) or was never submitted: free its queue slot."""
        ...

    async def active_jobs(self, user_key: str) -> int: ...


async def close_limiter(limiter: RateLimiter) -> None:
    """Close a limiter that holds a connection (the Redis one); the in-memory one has nothing to close."""
    close = getattr(limiter, "close", None)
    if close is not None:
        await close()


@dataclass
class _UserState:
    tokens: float
    refilled_at: float
    window: deque[float] = field(default_factory=deque)
    day: int = -1
    day_count: int = 0
    active: int = 0


class InMemoryRateLimiter:
    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._refill_per_s = settings.prompts_per_window / settings.window_s
        self._users: dict[str, _UserState] = {}
        self._servers: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._admissions = 0

    async def acquire(self, user_key: str, server_key: str | None = None, *, exempt: bool = False) -> LimitDecision:
        return self.acquire_now(user_key, server_key, exempt=exempt)

    async def refund(self, user_key: str, server_key: str | None = None) -> None:
        with self._lock:
            user = self._users.get(user_key)
            if user is not None:
                user.tokens = min(self.settings.burst, user.tokens + 1)
                if user.window:
                    user.window.pop()
                user.day_count = max(0, user.day_count - 1)
                user.active = max(0, user.active - 1)
            if server_key and self._servers.get(server_key):
                self._servers[server_key].pop()

    async def job_started(self, user_key: str) -> None:
        with self._lock:
            self._user(user_key, self._clock()).active += 1

    async def job_finished(self, user_key: str) -> None:
        with self._lock:
            user = self._users.get(user_key)
            if user is not None:
                user.active = max(0, user.active - 1)

    async def active_jobs(self, user_key: str) -> int:
        with self._lock:
            user = self._users.get(user_key)
            return user.active if user else 0

    def acquire_now(self, user_key: str, server_key: str | None = None, *, exempt: bool = False) -> LimitDecision:
        """The synchronous core of `acquire` (also what the benchmark measures)."""
        with self._lock:
            now = self._clock()
            user = self._user(user_key, now)
            if exempt:
                user.active += 1
                return ALLOWED
            server = self._server(server_key, now)
            decision = self._check(user, server, now)
            if decision.allowed:
                self._count(user, server, now)
            return decision

    def _user(self, user_key: str, now: float) -> _UserState:
        user = self._users.get(user_key)
        if user is None:
            user = self._users[user_key] = _UserState(tokens=float(self.settings.burst), refilled_at=now)
        user.tokens = min(self.settings.burst, user.tokens + (now - user.refilled_at) * self._refill_per_s)
        user.refilled_at = now
        _drop_older(user.window, now - self.settings.window_s)
        today = int(now // DAY_S)
        if user.day != today:
            user.day, user.day_count = today, 0
        return user

    def _server(self, server_key: str | None, now: float) -> deque[float] | None:
        if not server_key:
            return None
        window = self._servers.setdefault(server_key, deque())
        _drop_older(window, now - self.settings.window_s)
        return window

    def _check(self, user: _UserState, server: deque[float] | None, now: float) -> LimitDecision:
        limits = self.settings
        if user.active >= limits.max_queued_per_user:
            return LimitDecision(False, "queue", None)
        waits: list[tuple[float, str]] = []
        if user.day_count >= limits.daily_quota:
            waits.append(((user.day + 1) * DAY_S - now, "daily_quota"))
        if len(user.window) >= limits.prompts_per_window:
            waits.append((user.window[-limits.prompts_per_window] + limits.window_s - now, "user_window"))
        if server is not None and len(server) >= limits.server_prompts_per_window:
            waits.append((server[-limits.server_prompts_per_window] + limits.window_s - now, "server_window"))
        if user.tokens < 1.0:
            waits.append(((1.0 - user.tokens) / self._refill_per_s, "burst"))
        if not waits:
            return ALLOWED
        wait, limit = max(waits)
        return LimitDecision(False, limit, max(wait, 0.001))

    def _count(self, user: _UserState, server: deque[float] | None, now: float) -> None:
        user.tokens -= 1.0
        user.window.append(now)
        user.day_count += 1
        user.active += 1
        if server is not None:
            server.append(now)
        self._admissions += 1
        if self._admissions % PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget users and servers with nothing left to remember (full bucket, empty window, no jobs)."""
        today = int(now // DAY_S)
        idle = [
            key
            for key, user in self._users.items()
            if not user.window
            and not user.active
            and user.tokens >= self.settings.burst
            and (user.day != today or user.day_count == 0)
        ]
        for key in idle:
            del self._users[key]
        for key in [key for key, window in self._servers.items() if not window]:
            del self._servers[key]


def _drop_older(window: deque[float], cutoff: float) -> None:
    while window and window[0] <= cutoff:
        window.popleft()
