"""The scale-out job queue (`engine.queue = "redis"`): frontends and GPU workers on separate machines, coordinated
through Redis Streams, with every job journaled in the shared database (`store.url`, PostgreSQL in production).

Imports no torch: this is the producer side (`RedisJobQueue`, the `JobQueue` of engine/api.py for a chat frontend)
plus the Redis primitives both sides use (`StreamQueue`). The consumer side, `imagine worker`, lives in
engine/worker/remote.py.

Keys (all under `engine.redis_prefix`, "imagine" by default; `P` below):
  P:jobs:<W>x<H>x<steps>[xi<strength>]  one stream per compatibility key (engine.validation.batch_key: a batch
                          needs one shape, image prompts their own streams), consumer group "workers";
                          an entry is only a job id; acknowledged and deleted (XACK + XDEL) once the job's result
                          is in the database, so the stream never needs trimming under unacknowledged entries
  P:streams               the set of those streams (workers read them all)
  P:job:<id>              a hash per queued or running job: stream, entry id, owner frontend, user, payload (the
                          journaled record), state (queued/running), cancel flag
  P:lane:<user>           the user's jobs waiting for a slot: at most `engine.jobs_per_user` of a user's jobs are
                          in the streams at once (P:inflight counts them); when one ends, the next is appended
  P:events:<frontend>     events for the jobs a frontend owns (queued, running, step k/n, done, failed, cancelled),
                          read with the group "frontend", so a restarted frontend replays what it had not acknowledged
  P:queued                how many jobs are queued or running (held to `engine.queue_size`)
  P:dead                  the dead-letter stream: jobs handed to `engine.max_deliveries` workers without finishing

Fairness rule: a user has at most `jobs_per_user` (1) jobs queued or running in the streams; the rest wait in
the user's lane, in order, and join the stream's tail when one of theirs ends. The streams are FIFO, so a job
waits behind at most `jobs_per_user` jobs of each other user: with user A's ten jobs submitted before user B's
one, B's job is among the next two job starts.

Every state change is one Lua script (atomic): enqueue, start, heartbeat, reclaim, complete, cancel, requeue.
Redis 7.0 is enough (no XNACK, XREADGROUP CLAIM or XACKDEL). Redis Cluster is not supported (scripts touch keys
they compute).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from config.settings import EngineSettings, Settings
from engine import messages
from engine.errors import EngineClosed, JobCancelled, NotAllowed, QueueFull, QueueUnavailable
from engine.requests import GenerationRequest, JobState, ProgressEvent, Requester, Timings
from engine.serialize import image_from_dict, image_to_dict, request_from_dict, request_to_dict
from engine.store import JobRecord, JobStore
from engine.validation import batch_key, prepare_record

log = logging.getLogger(__name__)

WORKERS_GROUP = "workers"
FRONTEND_GROUP = "frontend"
EVENTS_KEPT = 10_000
DEAD_KEPT = 10_000
READ_BLOCK_MS = 1000
RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 5.0

_RELEASE = """
local function release(prefix, user, limit)
  local inflight = prefix .. ':inflight'
  local n = redis.call('HINCRBY', inflight, user, -1)
  if n < 0 then n = 0 end
  local lane = prefix .. ':lane:' .. user
  while n < limit do
    local next_id = redis.call('LPOP', lane)
    if not next_id then break end
    local h = prefix .. ':job:' .. next_id
    local stream = redis.call('HGET', h, 'stream')
    if stream then
      redis.call('HSET', h, 'entry', redis.call('XADD', stream, '*', 'job', next_id))
      n = n + 1
    end
  end
  if n > 0 then redis.call('HSET', inflight, user, n) else redis.call('HDEL', inflight, user) end
end
local function forget(prefix)
  if redis.call('DECR', prefix .. ':queued') <= 0 then redis.call('DEL', prefix .. ':queued') end
end
"""

# KEYS: job hash, lane, inflight, streams set, stream, queued count. ARGV: job id, user, owner, payload, jobs per
# user, "1" when the caller is the frontend that accepted the job, queue size (0: no limit). Returns
# {"stream"|"lane", position}, {"full", queued} or {"exists", 0} (already queued: enqueueing is idempotent; the
# accepting frontend takes the job's events over from a reconciling one).
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'owner', ARGV[3]) end
  return {'exists', 0}
end
local queued = tonumber(redis.call('GET', KEYS[6]) or '0')
if tonumber(ARGV[7]) > 0 and queued >= tonumber(ARGV[7]) then return {'full', queued} end
redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'stream', KEYS[5], 'owner', ARGV[3], 'user', ARGV[2], 'payload', ARGV[4],
           'state', 'queued')
if redis.call('SADD', KEYS[4], KEYS[5]) == 1 or redis.call('EXISTS', KEYS[5]) == 0 then
  redis.pcall('XGROUP', 'CREATE', KEYS[5], 'workers', '0', 'MKSTREAM')
end
local n = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if n < tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  redis.call('HSET', KEYS[1], 'entry', redis.call('XADD', KEYS[5], '*', 'job', ARGV[1]))
  local pending = redis.call('XPENDING', KEYS[5], 'workers')[1]
  return {'stream', redis.call('XLEN', KEYS[5]) - pending}
end
redis.call('RPUSH', KEYS[2], ARGV[1])
local waiting = redis.call('XLEN', KEYS[5]) - redis.call('XPENDING', KEYS[5], 'workers')[1]
return {'lane', waiting + redis.call('LLEN', KEYS[2])}
"""

# KEYS: job hash. ARGV: consumer, entry id. Returns {payload, owner, cancel flag} or false (gone or moved).
START = """
local h = redis.call('HMGET', KEYS[1], 'state', 'payload', 'owner', 'cancel', 'entry')
if not h[1] or h[5] ~= ARGV[2] then return false end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1])
return {h[2], h[3], h[4] or ''}
"""

# KEYS: stream. ARGV: consumer, prefix, then entry id and job id pairs. Renews the entries this consumer still
# owns (XCLAIM JUSTID: idle time reset, delivery count unchanged). Returns {lost job ids, cancelled job ids}.
HEARTBEAT = """
local lost, cancelled = {}, {}
for i = 3, #ARGV, 2 do
  local id, job = ARGV[i], ARGV[i + 1]
  local p = redis.call('XPENDING', KEYS[1], 'workers', id, id, 1)
  if #p == 1 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, id, 'JUSTID')
    if redis.call('HGET', ARGV[2] .. ':job:' .. job, 'cancel') == '1' then cancelled[#cancelled + 1] = job end
  else
    lost[#lost + 1] = job
  end
end
return {lost, cancelled}
"""

# KEYS: stream. ARGV: consumer, min idle ms, count. Takes over entries idle that long (their worker is gone).
# Returns {entry id, job id, deliveries} per entry taken.
RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], 'workers', ARGV[1], ARGV[2], '0-0', 'COUNT', ARGV[3])
local out = {}
for _, e in ipairs(r[2]) do
  local job = ''
  local fields = e[2]
  for i = 1, #fields, 2 do if fields[i] == 'job' then job = fields[i + 1] end end
  local p = redis.call('XPENDING', KEYS[1], 'workers', e[1], e[1], 1)
  out[#out + 1] = {e[1], job, p[1][4]}
end
return out
"""

# KEYS: stream, job hash, dead-letter stream. ARGV: entry id, prefix, jobs per user, dead-letter reason ("" for
# none), deliveries. Acknowledges and deletes the entry, forgets the job and gives its user's slot to the next job.
COMPLETE = (
    _RELEASE
    + """
local h = redis.call('HMGET', KEYS[2], 'user', 'entry', 'owner', 'payload', 'stream')
if ARGV[4] ~= '' and h[1] then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'job', string.sub(KEYS[2], #ARGV[2] + 6),
             'reason', ARGV[4], 'deliveries', ARGV[5], 'owner', h[3], 'stream', h[5], 'payload', h[4])
end
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if h[1] and h[2] == ARGV[1] then
  redis.call('DEL', KEYS[2])
  forget(ARGV[2])
  release(ARGV[2], h[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""
)

# KEYS: stream, job hash. ARGV: entry id, job id. Gives a job back (a worker stopping): to the stream's tail.
REQUEUE = """
if redis.call('HGET', KEYS[2], 'entry') ~= ARGV[1] then return 0 end
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'entry', redis.call('XADD', KEYS[1], '*', 'job', ARGV[2]), 'state', 'queued')
redis.call('HDEL', KEYS[2], 'worker')
return 1
"""

# KEYS: job hash. ARGV: prefix, job id. Returns the job's place in line (1: next to start) or 0 when it runs or is
# gone: in its stream, the entries the workers have not read yet up to its own; in its user's lane, all of those
# plus its place in the lane (an estimate: other users' lanes may feed the stream in between).
POSITION = """
local h = redis.call('HMGET', KEYS[1], 'state', 'stream', 'entry', 'user')
if h[1] ~= 'queued' or not h[2] then return 0 end
local last = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', h[2])) do
  for i = 1, #group, 2 do
    if group[i] == 'name' and group[i + 1] == 'workers' then
      for j = 1, #group, 2 do if group[j] == 'last-delivered-id' then last = group[j + 1] end end
    end
  end
end
if h[3] then return #redis.call('XRANGE', h[2], '(' .. last, h[3], 'COUNT', 10000) end
local unread = #redis.call('XRANGE', h[2], '(' .. last, '+', 'COUNT', 10000)
local place = redis.call('LPOS', ARGV[1] .. ':lane:' .. h[4], ARGV[2])
if not place then return 0 end
return unread + place + 1
"""

# KEYS: job hash. ARGV: prefix, jobs per user, job id. Returns {outcome, owner}: "removed" (it was waiting: the
# caller ends it), "running" (a worker holds it: flagged, that worker ends it) or "unknown" (not queued or running).
CANCEL = (
    _RELEASE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'stream', 'entry', 'user', 'owner')
if not h[1] then return {'unknown', ''} end
if h[1] == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1'); return {'running', h[5]} end
if not h[3] then
  redis.call('LREM', ARGV[1] .. ':lane:' .. h[4], 0, ARGV[3])
  redis.call('DEL', KEYS[1])
  forget(ARGV[1])
  return {'removed', h[5]}
end
local p = redis.call('XPENDING', h[2], 'workers', h[3], h[3], 1)
if #p > 0 then redis.call('HSET', KEYS[1], 'cancel', '1'); return {'running', h[5]} end
redis.call('XDEL', h[2], h[3])
redis.call('DEL', KEYS[1])
forget(ARGV[1])
release(ARGV[1], h[4], tonumber(ARGV[2]))
return {'removed', h[5]}
"""
)


# KEYS: stream. ARGV: min idle ms, a consumer to keep. Deletes the group's consumers that hold nothing and have not
# been seen for that long (workers that went away). Never one with pending entries: deleting those strands them.
PRUNE_CONSUMERS = """
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], 'workers')) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[1]) and info['name'] ~= ARGV[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'workers', info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""


@dataclass(frozen=True)
class Entry:
    """A job as a worker reads it from a stream."""

    stream: str
    entry_id: str
    job_id: str
    deliveries: int = 1


@dataclass(frozen=True)
class Started:
    record: JobRecord
    owner: str
    cancelled: bool


def redact(url: str) -> str:
    """A Redis URL fit for logs and errors: no password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=10)


class StreamQueue:
    """The Redis side of the job queue, shared by frontends and workers: keys and the atomic scripts."""

    def __init__(self, client: aioredis.Redis, config: EngineSettings) -> None:
        self.redis = client
        self.prefix = config.redis_prefix
        self.jobs_per_user = config.jobs_per_user
        self.queue_size = config.queue_size
        self._enqueue = client.register_script(ENQUEUE)
        self._start = client.register_script(START)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._reclaim = client.register_script(RECLAIM)
        self._complete = client.register_script(COMPLETE)
        self._requeue = client.register_script(REQUEUE)
        self._cancel = client.register_script(CANCEL)
        self._position = client.register_script(POSITION)
        self._prune = client.register_script(PRUNE_CONSUMERS)

    # ---- keys ------------------------------------------------------------------------------------------------

    def stream(self, shape: str) -> str:
        return f"{self.prefix}:jobs:{shape}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def lane(self, user_key: str) -> str:
        return f"{self.prefix}:lane:{user_key}"

    def events(self, owner: str) -> str:
        return f"{self.prefix}:events:{owner}"

    @property
    def streams_key(self) -> str:
        return f"{self.prefix}:streams"

    @property
    def queued_key(self) -> str:
        return f"{self.prefix}:queued"

    @property
    def inflight_key(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:dead"

    # ---- producer --------------------------------------------------------------------------------------------

    async def enqueue(self, record: JobRecord, owner: str, *, accepted: bool = True) -> tuple[str, int]:
        """("stream" | "lane", position) or ("exists", 0). `accepted`: the caller is the frontend that journaled
        the job just now (not a reconciliation), and so its owner."""
        user = record.request.requester.key
        stream = self.stream(batch_key(record))
        keys = [self.job_key(record.id), self.lane(user), self.inflight_key, self.streams_key, stream, self.queued_key]
        args: list[str | int] = [
            record.id,
            user,
            owner,
            record_to_json(record),
            self.jobs_per_user,
            "1" if accepted else "0",
            self.queue_size if accepted else 0,  # a job journaled earlier is queued again whatever the count
        ]
        where, position = await self._enqueue(keys=keys, args=args)
        return str(where), int(position)

    async def cancel(self, job_id: str) -> tuple[str, str]:
        """(outcome, owner frontend): see CANCEL."""
        keys, args = [self.job_key(job_id)], [self.prefix, str(self.jobs_per_user), job_id]
        outcome, owner = await self._cancel(keys=keys, args=args)
        return str(outcome), str(owner)

    async def positions(self, job_ids: Sequence[str]) -> list[int]:
        """Each job's place in line (0: running or gone), one round trip for all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._position(keys=[self.job_key(job_id)], args=[self.prefix, job_id], client=pipe)
            return [int(position) for position in await pipe.execute()]

    async def owner(self, job_id: str) -> str | None:
        value = await self.redis.hget(self.job_key(job_id), "owner")  # type: ignore[misc]
        return str(value) if value is not None else None

    # ---- consumer --------------------------------------------------------------------------------------------

    async def job_streams(self) -> list[str]:
        return sorted(await self.redis.smembers(self.streams_key))  # type: ignore[misc]

    async def ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, WORKERS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, streams: Sequence[str], count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer (XREADGROUP ... COUNT count [BLOCK]); when blocked, Redis answers with
        the one stream that got an entry."""
        if not streams:
            return []
        try:
            reply = await self.redis.xreadgroup(
                WORKERS_GROUP, consumer, {stream: ">" for stream in streams}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in streams:
                await self.ensure_group(stream)
            return []
        return [
            Entry(stream=stream, entry_id=entry_id, job_id=fields.get("job", ""))
            for stream, entries in reply or []
            for entry_id, fields in entries
            if fields  # a deleted entry read from history has no fields
        ]

    async def start(self, entry: Entry, consumer: str) -> Started | None:
        return _started(await self._start(keys=[self.job_key(entry.job_id)], args=[consumer, entry.entry_id]))

    async def start_many(self, entries: Sequence[Entry], consumer: str) -> list[Started | None]:
        """`start` for every entry of one read, in one round trip."""
        if len(entries) < 2:
            return [await self.start(entry, consumer) for entry in entries]
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            await self._start(keys=[self.job_key(entry.job_id)], args=[consumer, entry.entry_id], client=pipe)
        return [_started(reply) for reply in await pipe.execute()]

    async def heartbeat(self, consumer: str, stream: str, entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
        """Renew `entries`; (job ids this consumer no longer owns, job ids whose cancel was asked)."""
        args: list[str] = [consumer, self.prefix]
        for entry in entries:
            args += [entry.entry_id, entry.job_id]
        lost, cancelled = await self._heartbeat(keys=[stream], args=args)
        return list(lost), list(cancelled)

    async def reclaim(self, consumer: str, stream: str, min_idle_ms: int, count: int) -> list[Entry]:
        reply = await self._reclaim(keys=[stream], args=[consumer, min_idle_ms, count])
        return [Entry(stream, str(entry_id), str(job), int(n)) for entry_id, job, n in reply]

    async def complete(self, entry: Entry, dead_reason: str = "") -> bool:
        """Acknowledge (after the result is stored), free the user's slot; with a reason, dead-letter it first."""
        keys = [entry.stream, self.job_key(entry.job_id), self.dead_key]
        args: list[str | int] = [entry.entry_id, self.prefix, self.jobs_per_user, dead_reason, entry.deliveries]
        return bool(await self._complete(keys=keys, args=args))

    async def complete_many(self, entries: Sequence[Entry]) -> None:
        """`complete` for several entries in one round trip (each script still atomic on its own)."""
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            keys = [entry.stream, self.job_key(entry.job_id), self.dead_key]
            await self._complete(
                keys=keys, args=[entry.entry_id, self.prefix, self.jobs_per_user, "", entry.deliveries], client=pipe
            )
        await pipe.execute()

    async def requeue(self, entry: Entry) -> bool:
        keys = [entry.stream, self.job_key(entry.job_id)]
        return bool(await self._requeue(keys=keys, args=[entry.entry_id, entry.job_id]))

    async def prune_consumers(self, stream: str, min_idle_ms: int, keep: str) -> list[str]:
        """Forget consumers (gone workers) that hold nothing and were not seen for `min_idle_ms`."""
        return [str(name) for name in await self._prune(keys=[stream], args=[min_idle_ms, keep])]

    async def publish(self, owner: str, event: ProgressEvent) -> None:
        await self.redis.xadd(self.events(owner), {"e": event_to_json(event)}, maxlen=EVENTS_KEPT, approximate=True)

    async def dead_letters(self) -> list[dict[str, str]]:
        return [fields for _, fields in await self.redis.xrange(self.dead_key)]


def _started(reply: Any) -> Started | None:
    if not reply:
        return None
    payload, owner, cancel = reply
    return Started(record=record_from_json(payload), owner=owner, cancelled=cancel == "1")


# ---- plain data on the wire ------------------------------------------------------------------------------------


def record_to_json(record: JobRecord) -> str:
    return json.dumps(
        {
            "id": record.id,
            "request": request_to_dict(record.request),
            "seeds": list(record.seeds),
            "width": record.width,
            "height": record.height,
            "steps": record.steps,
            "created_at": record.created_at,
        },
        ensure_ascii=False,
    )


def record_from_json(text: str) -> JobRecord:
    data = json.loads(text)
    return JobRecord(
        id=data["id"],
        request=request_from_dict(data["request"]),
        seeds=tuple(data["seeds"]),
        width=data["width"],
        height=data["height"],
        steps=data["steps"],
        state=JobState.QUEUED,
        created_at=data["created_at"],
    )


def event_to_json(event: ProgressEvent) -> str:
    data = asdict(event)
    data["state"] = event.state.value
    data["images"] = [image_to_dict(image) for image in event.images]
    data["sent_at"] = time.time()
    return json.dumps(data, ensure_ascii=False)


def event_from_json(text: str) -> ProgressEvent:
    data = json.loads(text)
    data.pop("sent_at", None)
    data["state"] = JobState(data["state"])
    data["images"] = tuple(image_from_dict(image) for image in data["images"])
    data["timings"] = Timings(**data["timings"]) if data.get("timings") else None
    return ProgressEvent(**data)


def final_event(record: JobRecord) -> ProgressEvent:
    return ProgressEvent(
        job_id=record.id,
        state=record.state,
        error_kind=record.error_kind,
        error=record.error,
        images=record.images,
        total_steps=record.steps,
        step=record.steps if record.state is JobState.DONE else 0,
    )


# ---- the producer side: a frontend's JobQueue --------------------------------------------------------------------


class RedisJob:
    """A JobHandle fed by the frontend's events stream. Never goes back from a finished state."""

    def __init__(self, record: JobRecord, position: int | None = None) -> None:
        self.record = record
        self._event = ProgressEvent(job_id=record.id, state=record.state, position=position, total_steps=record.steps)
        self._listeners: set[asyncio.Queue[ProgressEvent | None]] = set()
        self._handed_back = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def request(self) -> GenerationRequest:
        return self.record.request

    @property
    def state(self) -> JobState:
        return self._event.state

    def snapshot(self) -> ProgressEvent:
        return self._event

    def apply(self, event: ProgressEvent) -> None:
        if self._event.state.finished or self._handed_back:
            return
        self._event = event
        for queue in self._listeners:
            queue.put_nowait(event)

    def hand_back(self) -> None:
        """This frontend is stopping: end every follower's events without a finished state (the job goes on on
        a worker; its events wait in this frontend's stream, and it is followed again after the restart)."""
        self._handed_back = True
        for queue in self._listeners:
            queue.put_nowait(None)

    async def events(self) -> AsyncIterator[ProgressEvent]:
        queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            event: ProgressEvent | None = self._event
            while event is not None:
                yield event
                if event.state.finished or self._handed_back:
                    return
                event = await queue.get()
        finally:
            self._listeners.discard(queue)

    async def wait_finished(self) -> ProgressEvent:
        async for event in self.events():
            if event.state.finished:
                return event
        return self._event


READINESS_PING_S = 2.0


class RedisJobQueue:
    """The JobQueue of a frontend in scale-out mode: journal in the shared database, then XADD; events from this
    frontend's stream. Holds no model and imports no torch."""

    def __init__(
        self, settings: Settings, *, store: JobStore | None = None, client: aioredis.Redis | None = None
    ) -> None:
        self.settings = settings
        self._config = settings.engine
        self.frontend_id = self._config.frontend_id or socket.gethostname()
        self._store = store
        self._owns_store = store is None
        self._client = client or connect(self._config.redis_url)
        self.streams = StreamQueue(self._client, self._config)
        self._handles: dict[str, RedisJob] = {}
        self._accepting = False
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._positions: asyncio.Task[None] | None = None
        self._events_key = self.streams.events(self.frontend_id)

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        if self._store is None:
            self._store = await JobStore.open(self.settings.store.url)
        try:
            await self._create_events_group()
            await self._reconcile()
        except RedisError as exc:
            raise QueueUnavailable(self._unavailable(exc)) from exc
        self._reader = asyncio.create_task(self._read_events(), name=f"imagine-events-{self.frontend_id}")
        self._positions = asyncio.create_task(self._refresh_positions(), name=f"imagine-positions-{self.frontend_id}")
        self._accepting = True
        log.info("job queue on Redis %s (frontend %s)", redact(self._config.redis_url), self.frontend_id)

    async def shutdown(self, drain: bool = True) -> None:
        """Stop taking work and hand every followed job back at once, drain or not: the workers run the jobs, not
        this process. Their events wait in this frontend's stream for its restart, and once done they are in the
        journal for any frontend's redelivery sweep. The store stays usable (deliveries under way finish)."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        for task in (self._reader, self._positions):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reader = self._positions = None
        for handle in self._handles.values():
            handle.hand_back()
        self._handles.clear()
        await self._client.aclose()
        if self._store is not None and self._owns_store:
            await self._store.close()

    # ---- the job API -----------------------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> RedisJob:
        if not self._accepting:
            raise EngineClosed(messages.NOT_RUNNING)
        record = prepare_record(request, self._config)
        store = self._store_required()
        await store.add(record)
        try:
            where, position = await self.streams.enqueue(record, self.frontend_id)
        except RedisError as exc:
            error = QueueUnavailable(self._unavailable(exc))
            await store.set_state(record.id, JobState.FAILED, error.kind, str(error))
            raise error from exc
        if where == "full":  # engine.queue_size counts every queued or running job, of every frontend
            full = QueueFull(messages.QUEUE_FULL.format(size=self._config.queue_size))
            await store.set_state(record.id, JobState.FAILED, full.kind, str(full))
            raise full
        job = RedisJob(record, position=position)
        self._handles[job.id] = job
        log.info("job %s queued for %s at position %d", job.id, record.request.requester.key, position)
        return job

    async def cancel(self, job_id: str, by: Requester | None = None) -> bool:
        record = await self.lookup(job_id)
        if record is None or record.state.finished:
            return False
        if by is not None and by.key != record.request.requester.key:
            raise NotAllowed(messages.NOT_YOURS)
        try:
            outcome, owner = await self.streams.cancel(job_id)
            if outcome == "running":
                return True  # the worker holding it stops it, journals it and tells its frontend
            if outcome != "removed":
                return False
            error = JobCancelled(messages.CANCELLED)
            await self._store_required().set_state(job_id, JobState.CANCELLED, error.kind, str(error))
            event = ProgressEvent(job_id=job_id, state=JobState.CANCELLED, error_kind=error.kind, error=str(error))
            handle = self._handles.get(job_id)
            if handle is not None:
                self._finish(handle, event)
            if owner and owner != self.frontend_id:  # pressed on another frontend than the one following it
                await self.streams.publish(owner, event)
            return True
        except RedisError as exc:
            raise QueueUnavailable(self._unavailable(exc)) from exc

    async def lookup(self, job_id: str) -> JobRecord | None:
        return await self._store_required().get(job_id)

    async def active(self, platform: str | None = None) -> list[RedisJob]:
        """This frontend's queued and running jobs (a job's events come to the frontend that queued it)."""
        store = self._store_required()
        records = await store.in_states([JobState.QUEUED, JobState.RUNNING])
        records = [r for r in records if platform is None or r.request.requester.platform == platform]
        owners = await self._owners([record.id for record in records])
        handles = []
        for record, owner in zip(records, owners, strict=True):
            if owner != self.frontend_id:
                continue
            handle = self._handles.get(record.id)
            if handle is None:
                handle = self._handles[record.id] = RedisJob(record)
            handles.append(handle)
        for handle in handles:  # an ending read before the handle existed: the journal has it
            fresh = await store.get(handle.id)
            if fresh is not None and fresh.state.finished:
                self._finish(handle, final_event(fresh))
        return [handle for handle in handles if not handle.state.finished]

    async def undelivered(self, platform: str | None = None) -> list[JobRecord]:
        records = await self._store_required().in_states([JobState.DONE])
        return [record for record in records if platform is None or record.request.requester.platform == platform]

    async def update_delivery(self, job_id: str, changes: dict[str, Any]) -> None:
        handle = self._handles.get(job_id)
        record = handle.record if handle is not None else await self.lookup(job_id)
        if record is None:
            return
        request = await self._store_required().merge_delivery(record, changes)
        if request is not None and handle is not None:
            handle.record = replace(handle.record, request=request)

    async def mark_delivered(self, job_id: str) -> None:
        await self._store_required().set_state(job_id, JobState.DELIVERED)

    # ---- events --------------------------------------------------------------------------------------------

    async def readiness(self) -> dict[str, bool]:
        """/readyz: Redis answers a PING within 2 s, the queue takes work, and this frontend's events reader runs
        (each worker's own /readyz says whether it is stepping)."""
        try:
            async with asyncio.timeout(READINESS_PING_S):
                redis = bool(await self._client.ping())  # type: ignore[misc]  # redis-py types sync and async alike
        except (TimeoutError, RedisError, OSError):
            redis = False
        reader = self._reader is not None and not self._reader.done()
        return {"redis": redis, "queue_accepting": self._accepting, "events_reader": reader}

    async def _refresh_positions(self) -> None:
        """Queue positions move as other jobs start on workers anywhere, which no event of ours reports: every
        heartbeat, look up the place in line of each job this frontend follows that is still queued."""
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            queued = [handle for handle in self._handles.values() if handle.state is JobState.QUEUED]
            if not queued:
                continue
            try:
                positions = await self.streams.positions([handle.id for handle in queued])
            except (RedisError, OSError):
                continue  # the events reader reports outages; positions simply wait for the next round
            for handle, position in zip(queued, positions, strict=True):
                current = handle.snapshot()
                if position and current.state is JobState.QUEUED and position != current.position:
                    handle.apply(replace(current, position=position))

    async def _create_events_group(self) -> None:
        try:
            await self._client.xgroup_create(self._events_key, FRONTEND_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_events(self) -> None:
        """Dispatch this frontend's events, acknowledging each after it reached its handle. First what a previous
        run of this frontend read but did not acknowledge (id 0), then new ones (>)."""
        delay = RETRY_DELAY_S
        cursor = "0"
        broken = False
        while True:
            try:
                if broken:
                    await self._create_events_group()
                    await self._reconcile()
                    log.info("Redis is reachable again (%s)", redact(self._config.redis_url))
                    broken = False
                reply = await self._client.xreadgroup(
                    FRONTEND_GROUP,
                    self.frontend_id,
                    {self._events_key: cursor},
                    count=100,
                    block=None if cursor == "0" else READ_BLOCK_MS,
                )
                entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
                if cursor == "0" and not entries:
                    cursor = ">"
                    continue
                for _, fields in entries:
                    if fields and "e" in fields:
                        self._dispatch(event_from_json(fields["e"]))
                if entries:
                    await self._client.xack(self._events_key, FRONTEND_GROUP, *[entry_id for entry_id, _ in entries])
                    if cursor == "0":
                        cursor = entries[-1][0]
                delay = RETRY_DELAY_S
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not broken:
                    log.error("%s; retrying", self._unavailable(exc))
                broken = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
            except Exception:
                log.exception("an event could not be dispatched")

    def _dispatch(self, event: ProgressEvent) -> None:
        handle = self._handles.get(event.job_id)
        if handle is None:
            return  # not followed here (or already finished): the journal has the outcome
        if event.state.finished:
            self._finish(handle, event)
        else:
            handle.apply(event)

    def _finish(self, handle: RedisJob, event: ProgressEvent) -> None:
        handle.apply(event)
        self._handles.pop(handle.id, None)

    async def _owners(self, job_ids: Sequence[str]) -> list[str | None]:
        if not job_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.streams.job_key(job_id), "owner")
        return [str(owner) if owner is not None else None for owner in await pipe.execute()]

    async def _reconcile(self) -> None:
        """Queue again this frontend's journaled jobs that Redis does not know (e.g. Redis came back without
        them): the database is the record of what was acknowledged."""
        store = self._store_required()
        records = await store.in_states([JobState.QUEUED, JobState.RUNNING])
        owners = await self._owners([record.id for record in records])
        missing = [record for record, owner in zip(records, owners, strict=True) if owner is None]
        for record in missing:
            where, _ = await self.streams.enqueue(record, self.frontend_id, accepted=False)
            if where != "exists":
                log.warning("job %s was journaled but not in Redis: queued again", record.id)

    def _store_required(self) -> JobStore:
        if self._store is None:
            raise EngineClosed(messages.NOT_STARTED)
        return self._store

    def _unavailable(self, exc: BaseException) -> str:
        return messages.QUEUE_UNAVAILABLE.format(error=f"Redis at {redact(self._config.redis_url)}: {exc}")
