"""The rate limits of moderation/limits.py shared by every frontend, in Redis (scale-out mode).

Same semantics as `InMemoryRateLimiter` (burst token bucket, sliding user and server windows, daily quota in UTC
days, per-user in-flight cap, all or nothing), each call one Lua script, so that concurrent frontends are counted
exactly: Redis runs one script at a time. Time is Redis's own clock (`TIME`), so frontends whose clocks disagree
still agree on the windows; tests pass a clock instead.

Keys, under `<engine.redis_prefix>:limits:`: `user:<key>` (a hash: tokens, refilled_at, day, day_count, active),
`window:<key>` and `server:<key>` (lists of admission times, oldest first, expiring after a window of silence).
A user's hash expires two days after its last change unless a job of theirs is in flight.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from config.settings import LimitSettings
from moderation.limits import ALLOWED, DAY_S, LimitDecision

_COMMON = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local day_s = tonumber(ARGV[2])
local window_s = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local refill = tonumber(ARGV[5])
local u = redis.call('HMGET', KEYS[1], 'tokens', 'refilled_at', 'day', 'day_count', 'active')
local tokens = tonumber(u[1]) or burst
local refilled = tonumber(u[2]) or now
local day = tonumber(u[3]) or -1
local day_count = tonumber(u[4]) or 0
local active = tonumber(u[5]) or 0
local function save()
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'refilled_at', string.format('%.17g', now),
             'day', day, 'day_count', day_count, 'active', active)
  if active > 0 then redis.call('PERSIST', KEYS[1]) else redis.call('EXPIRE', KEYS[1], 2 * 86400) end
end
local function drop_older(key, cutoff)
  while true do
    local first = redis.call('LINDEX', key, 0)
    if first and tonumber(first) <= cutoff then redis.call('LPOP', key) else break end
  end
end
"""

# KEYS: user hash, user window, server window ("" for none). ARGV: now ("" for Redis time), day_s, window_s,
# burst, refill per s, exempt, per window, server per window, max in flight, daily quota.
# Returns {allowed (1/0), limit, retry_after_s} as strings.
ACQUIRE = (
    _COMMON
    + """
tokens = math.min(burst, tokens + (now - refilled) * refill)
drop_older(KEYS[2], now - window_s)
local today = math.floor(now / day_s)
if day ~= today then day = today; day_count = 0 end
local server = KEYS[3] ~= ''
if ARGV[6] == '1' then active = active + 1; save(); return {'1', '', ''} end
if server then drop_older(KEYS[3], now - window_s) end
if active >= tonumber(ARGV[9]) then save(); return {'0', 'queue', ''} end
local best, best_limit = nil, ''
local function wait(seconds, limit)
  if best == nil or seconds > best or (seconds == best and limit > best_limit) then
    best, best_limit = seconds, limit
  end
end
if day_count >= tonumber(ARGV[10]) then wait((day + 1) * day_s - now, 'daily_quota') end
local per_window = tonumber(ARGV[7])
local n = redis.call('LLEN', KEYS[2])
if n >= per_window then
  wait(tonumber(redis.call('LINDEX', KEYS[2], n - per_window)) + window_s - now, 'user_window')
end
if server then
  local per_server = tonumber(ARGV[8])
  local m = redis.call('LLEN', KEYS[3])
  if m >= per_server then
    wait(tonumber(redis.call('LINDEX', KEYS[3], m - per_server)) + window_s - now, 'server_window')
  end
end
if tokens < 1.0 then wait((1.0 - tokens) / refill, 'burst') end
if best ~= nil then
  save()
  return {'0', best_limit, string.format('%.17g', math.max(best, 0.001))}
end
tokens = tokens - 1.0
local stamp = string.format('%.17g', now)
redis.call('RPUSH', KEYS[2], stamp)
redis.call('EXPIRE', KEYS[2], math.ceil(window_s) + 1)
day_count = day_count + 1
active = active + 1
if server then
  redis.call('RPUSH', KEYS[3], stamp)
  redis.call('EXPIRE', KEYS[3], math.ceil(window_s) + 1)
end
save()
return {'1', '', ''}
"""
)

# KEYS: user hash, user window, server window. ARGV as ACQUIRE (the first five). Undoes the last admission.
REFUND = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  tokens = math.min(burst, tokens + 1)
  now = refilled
  redis.call('RPOP', KEYS[2])
  day_count = math.max(0, day_count - 1)
  active = math.max(0, active - 1)
  save()
end
if KEYS[3] ~= '' then redis.call('RPOP', KEYS[3]) end
return 1
"""
)

# KEYS: user hash. ARGV: +1 (a job started) or -1 (a job ended; never below 0).
IN_FLIGHT = """
local active = tonumber(redis.call('HGET', KEYS[1], 'active') or '0') + tonumber(ARGV[1])
if active < 0 then active = 0 end
redis.call('HSET', KEYS[1], 'active', active)
if active > 0 then redis.call('PERSIST', KEYS[1]) else redis.call('EXPIRE', KEYS[1], 2 * 86400) end
return active
"""


class RedisRateLimiter:
    """`RateLimiter` (moderation/limits.py) on Redis: one limit state for every frontend."""

    def __init__(
        self,
        settings: LimitSettings,
        client: aioredis.Redis,
        prefix: str = "imagine",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client
        self._prefix = f"{prefix}:limits"
        self._clock = clock
        self._refill_per_s = settings.prompts_per_window / settings.window_s
        self._acquire = client.register_script(ACQUIRE)
        self._refund = client.register_script(REFUND)
        self._in_flight = client.register_script(IN_FLIGHT)

    @classmethod
    def from_url(
        cls, settings: LimitSettings, url: str, prefix: str = "imagine", clock: Callable[[], float] | None = None
    ) -> RedisRateLimiter:
        return cls(settings, aioredis.Redis.from_url(url, decode_responses=True), prefix, clock)

    async def acquire(self, user_key: str, server_key: str | None = None, *, exempt: bool = False) -> LimitDecision:
        limits = self.settings
        args = self._common() + [
            "1" if exempt else "0",
            limits.prompts_per_window,
            limits.server_prompts_per_window,
            limits.max_queued_per_user,
            limits.daily_quota,
        ]
        allowed, limit, retry_after = await self._acquire(keys=self._keys(user_key, server_key), args=args)
        if allowed == "1":
            return ALLOWED
        return LimitDecision(False, limit, float(retry_after) if retry_after else None)

    async def refund(self, user_key: str, server_key: str | None = None) -> None:
        await self._refund(keys=self._keys(user_key, server_key), args=self._common())

    async def job_started(self, user_key: str) -> None:
        await self._in_flight(keys=[self._user(user_key)], args=[1])

    async def job_finished(self, user_key: str) -> None:
        await self._in_flight(keys=[self._user(user_key)], args=[-1])

    async def active_jobs(self, user_key: str) -> int:
        value = await self.redis.hget(self._user(user_key), "active")  # type: ignore[misc]
        return int(value or 0)

    async def close(self) -> None:
        await self.redis.aclose()

    def _user(self, user_key: str) -> str:
        return f"{self._prefix}:user:{user_key}"

    def _keys(self, user_key: str, server_key: str | None) -> list[str]:
        server = f"{self._prefix}:server:{server_key}" if server_key else ""
        return [self._user(user_key), f"{self._prefix}:window:{user_key}", server]

    def _common(self) -> list[str | float]:
        now = repr(self._clock()) if self._clock is not None else ""
        limits = self.settings
        return [now, DAY_S, limits.window_s, limits.burst, self._refill_per_s]
