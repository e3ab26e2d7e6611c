"""Job state and item outputs in Redis.

Every write a batch makes is one round trip and one atomic script (:mod:`batchery.store.lua`). The script
stores each output only where its item has none (one HMGET, then one HSET, per output shard) and counts
only the fields it created, so a chunk that runs twice (redelivered after a crash, or a duplicate) can
neither double-count nor lose an item; it flips the job to ``completed`` in the same step in which the last
item is accounted for, and in that same step hands the result to every item that waited on it (see
:mod:`batchery.cache`), or records a durable handoff for them (:mod:`batchery.store.handoff`). Nothing about
an item is left for a second round trip that could fail.

A job's outputs live in shards of :data:`batchery.keys.SHARD_ITEMS` items, so no key grows with the job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import orjson
import redis
from redis.exceptions import NoScriptError

from batchery import keys
from batchery.redis_urls import redis_client
from batchery.store import lua
from batchery.store.leases import Leases
from batchery.store.watches import EndWatch
from batchery.store.webhooks import Webhooks

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATUSES = ("completed", "failed", "cancelled")
#: A cancelled job's items still queued get their ``cancelled`` result as workers meet them; what is written from
#: its results (a batch's files, a job's result files) waits for them this long at most.
CANCEL_GRACE_S = 30.0
#: The longest one blocking read waits before the job's status is read again.
MAX_BLOCK_S = 2.0
#: The shortest blocking read a wait makes: Redis keeps a blocking timeout in whole milliseconds, and one that
#: truncates to 0 (a wait's last slice, left with under a millisecond) would block for ever.
MIN_BLOCK_S = 0.01
#: Items per call of the scripts that take many at once (results of a sweep, say).
RECORD_PAGE = 5000
#: Jobs of the same creation time read beyond a page, to find where the page after a cursor starts.
TIES = 16

_RECORD = lua.script("""
-- ARGV after the head, per job: the job's id, its items' indices joined by ',', their flags (one character
-- each: 1 = output, 0 = error, R = an error of its own job's making, cancelled or past its deadline, whose
-- waiting items are computed anew, not given it), then their values, one argument each. An argument per item
-- rather than four: redis-py packs every argument in Python, and that was a tenth of a worker's time.
-- A job sent with the cache off ('claims' is '0') owns no claim, and no lookup is made for its items.
local function resolve_claim(job, index, value, flag)
  if not jobs[job].claims then return end
  local owns = C.job_prefix .. job .. ':owns:' .. shard_of(index)
  local key = redis.call('HGET', owns, index)
  if not key then return end
  redis.call('HDEL', owns, index)
  local entry = C.cache_prefix .. key
  local inflight = redis.call('GET', entry .. ':inflight')
  local me = job .. '|' .. index .. '\\n'
  if inflight and string.sub(inflight, 1, #me) ~= me then return end -- abandoned, and claimed afresh since
  redis.call('DEL', entry .. ':inflight')
  if flag == '1' and C.cache_ttl > 0 then cache_put(key, value) end
  local waiters = entry .. ':waiters'
  if flag == 'R' then
    if redis.call('LLEN', waiters) > 0 then
      handoff('release', key, waiters, {'input', inflight and string.sub(inflight, #me + 1) or ''})
    end
  else
    share(key, waiters, value, flag == '1')
  end
end
-- The items go in by output shard: one HMGET says which have no result yet, one HSET stores those, where a
-- call per item (HSETNX) cost Redis more than all the rest of the script. An item twice in one call counts
-- once, the first time; the groups are stored one after another, each reading what the last one left.
local SLICE = 1000 -- fields per HMGET, items per HSET: well inside Lua's limit on unpack
local function store_group(g)
  local s, fields = g.s, g.index
  local have = {}
  for first = 1, #fields, SLICE do
    local part = redis.call('HMGET', g.key, unpack(fields, first, math.min(first + SLICE - 1, #fields)))
    for k = 1, #part do have[first + k - 1] = part[k] end
  end
  local seen, pairs_, stored = {}, {}, {}
  for k = 1, #fields do
    local index = fields[k]
    if not have[k] and not seen[index] then
      seen[index] = true
      pairs_[#pairs_ + 1] = index
      pairs_[#pairs_ + 1] = ARGV[g.at[k]]
      stored[#stored + 1] = k
    end
  end
  if #stored == 0 then return end
  for first = 1, #pairs_, 2 * SLICE do
    redis.call('HSET', g.key, unpack(pairs_, first, math.min(first + 2 * SLICE - 1, #pairs_)))
  end
  expire_with_job(s, g.key)
  for _, k in ipairs(stored) do
    count(s, g.flag[k] == '1', false)
    resolve_claim(g.job, fields[k], ARGV[g.at[k]], g.flag[k])
  end
end

local grouped = {}
local i = FIRST
while i <= #ARGV do
  local job, flags, at = ARGV[i], ARGV[i + 2], i + 3
  local s = job_state(job)
  local k = 0
  for index in string.gmatch(ARGV[i + 1], '%d+') do
    k = k + 1
    if s then
      local shard = shard_of(index)
      s.groups = s.groups or {}
      local g = s.groups[shard]
      if not g then
        g = {s = s, job = job, key = out_key(s, shard), index = {}, at = {}, flag = {}}
        s.groups[shard] = g
        grouped[#grouped + 1] = g
      end
      local n = #g.index + 1
      g.index[n], g.at[n], g.flag[n] = index, at + k - 1, string.sub(flags, k, k)
    end
  end
  i = at + k
end
for _, g in ipairs(grouped) do store_group(g) end
return {settle(), C.handoffs}
""")


def record_args(results: Sequence[ItemResult]) -> list[Any]:
    """The record script's arguments after its head: per job, its id, indices, flags, then one value per item."""
    by_job: dict[str, list[ItemResult]] = {}
    for r in results:
        by_job.setdefault(r.job_id, []).append(r)
    args: list[Any] = []
    for job_id, items in by_job.items():
        args += (job_id, ",".join([str(r.index) for r in items]), "".join([r.flag for r in items]))
        args += [r.value for r in items]
    return args


_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running') end
return redis.call('HMGET', KEYS[1], 'status', 'deadline', 'created_at')
"""

_MISSING = """
local missing = {}
for i = 2, #ARGV do
  local key = KEYS[1] .. math.floor(tonumber(ARGV[i]) / tonumber(ARGV[1]))
  if redis.call('HEXISTS', key, ARGV[i]) == 0 then missing[#missing + 1] = ARGV[i] end
end
return missing
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
if status == 'queued' or status == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 'cancelled'
end
return status
"""


class Started(NamedTuple):
    """A job as a chunk finds it when it starts: its status, deadline (epoch s) and submission time."""

    status: str
    deadline: float | None
    created_at: float


#: Errors that belong to one job, not to its input: an item waiting on an owner that ends so is computed anew.
JOB_SCOPED_ERRORS = frozenset({"cancelled", "deadline_exceeded"})


class ItemResult(NamedTuple):
    """One finished item on its way to Redis: ``ok`` is False when ``value`` is an encoded error.

    A named tuple, not a frozen dataclass: one is made per item on the worker's write path, and a tuple is
    made in 0.17 µs against 0.41.
    """

    job_id: str
    index: int
    value: bytes
    ok: bool

    @property
    def flag(self) -> str:
        """How the record script takes it: an output, an error, or an error that releases its waiters."""
        if self.ok:
            return "1"
        return "R" if orjson.loads(self.value[1:]).get("code") in JOB_SCOPED_ERRORS else "0"


@dataclass(frozen=True)
class Landed:
    """What one atomic write did to one job: new outputs and errors, and whether it finished the job."""

    job_id: str
    ok: int
    err: int
    cached: int
    finished: bool
    model: str
    status: str
    created_at: float
    tier: str


#: Called with (model, final status, seconds from submission, tier) by the one write that ends a job's last item.
FinishHook = Callable[[str, str, float, str], None]
#: Called when a write left handoffs behind (results to share beyond a page, items to compute anew).
HandoffHook = Callable[[int], None]


class JobStore:
    """Reads and writes jobs; safe to share between threads (redis-py pools its connections)."""

    def __init__(self, client: redis.Redis, job_ttl_s: int, cache_ttl_s: int = 0, cache_max_entries: int = 0) -> None:
        self.redis = client
        self.job_ttl_s = job_ttl_s
        self.bounds = lua.Bounds(job_ttl_s, cache_ttl_s, cache_max_entries)
        self.on_finish: FinishHook | None = None
        self.on_handoff: HandoffHook | None = None
        self.webhooks = Webhooks(client)
        self.result_files = EndWatch(client, keys.results_watch(), keys.results_due())
        self.leases = Leases(client)
        self._record = client.register_script(_RECORD)
        self._start = client.register_script(_START)
        self._missing = client.register_script(_MISSING)
        self._cancel = client.register_script(_CANCEL)

    @classmethod
    def from_url(cls, url: str, job_ttl_s: int, cache_ttl_s: int = 0, cache_max_entries: int = 0) -> "JobStore":
        return cls(redis_client(url), job_ttl_s, cache_ttl_s, cache_max_entries)

    @property
    def cache_ttl_s(self) -> int:
        return self.bounds.cache_ttl_s

    def create(self, job_id: str, fields: dict[str, Any], ttl_s: int | None = None) -> None:
        """A new job; every key it gets later expires with it, at ``expires_at``. A job with an ``owner`` (the
        name of the API key that submitted it) is also listed among that key's recent jobs; one with a
        ``webhook``, or that asks for ``results`` as files, is watched for its end (:mod:`batchery.store.watches`),
        in the same transaction."""
        now = time.time()
        ttl = ttl_s or self.job_ttl_s
        values = {
            **fields, "id": job_id, "status": "queued", "created_at": now, "expires_at": int(now + ttl),
            "succeeded": 0, "failed": 0, "chunks": 0,
        }
        if fields.get("webhook"):
            values.update(webhook_state="pending", webhook_attempts=0)
        if fields.get("results"):
            values.update(results_state="pending")
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), mapping={k: _field(v) for k, v in values.items()})
        pipe.expire(keys.job(job_id), ttl)
        pipe.zadd(keys.recent_jobs(), {job_id: now})
        pipe.zremrangebyrank(keys.recent_jobs(), 0, -keys.RECENT_JOBS - 1)
        if fields.get("owner"):
            mine = keys.tenant_recent(fields["owner"])
            pipe.zadd(mine, {job_id: now})
            pipe.zremrangebyrank(mine, 0, -keys.RECENT_JOBS - 1)
            pipe.expire(mine, max(ttl, self.job_ttl_s))
        if fields.get("webhook"):
            self.webhooks.watch(pipe, job_id, now)
        if fields.get("results"):
            self.result_files.watch(pipe, job_id, now)
        pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        return _parse(self.redis.hgetall(keys.job(job_id)))

    def get_many(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The jobs among ``job_ids`` that still exist, in that order, read in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [job for raw in pipe.execute() if (job := _parse(raw)) is not None]

    def recent(self, limit: int, owner: str | None = None) -> list[str]:
        """The newest job ids, newest first: of every job, or of those ``owner`` submitted."""
        key = keys.recent_jobs() if owner is None else keys.tenant_recent(owner)
        return [m.decode() for m in self.redis.zrevrange(key, 0, limit - 1)]

    def recent_page(self, count: int, owner: str | None = None, before: tuple[float, str] | None = None) -> list[tuple[str, float]]:
        """Up to ``count`` ``(job id, created_at)`` of the recent-jobs index (or of ``owner``'s), newest first, and
        older than ``before``, the last ``(created_at, id)`` a caller has seen (jobs created in the same
        microsecond are told apart by their ids, in the order the index keeps them). One round trip."""
        key = keys.recent_jobs() if owner is None else keys.tenant_recent(owner)
        if before is None:
            raw = self.redis.zrevrange(key, 0, count - 1, withscores=True)
        else:
            raw = self.redis.zrevrangebyscore(key, before[0], "-inf", start=0, num=count + TIES, withscores=True)
        page = [(member.decode(), score) for member, score in raw]
        if before is not None:
            page = [(job_id, score) for job_id, score in page if score < before[0] or job_id < before[1]]
        return page[:count]

    def summaries(self, job_ids: Sequence[str]) -> list[tuple[str, str, str, str] | None]:
        """``(id, status, model, version)`` of each job, None for one that is gone: what a listing filters on,
        read without the jobs' metadata, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "status", "model", "version")
        found: list[tuple[str, str, str, str] | None] = []
        for job_id, (status, model, version) in zip(job_ids, pipe.execute()):
            found.append((job_id, status.decode(), _text(model), _text(version)) if status else None)
        return found

    def owners(self, job_ids: Iterable[str]) -> dict[str, str | None]:
        """Who submitted each job (the API key's name; None when no key did, or the job is gone), in one round trip."""
        job_ids = list(dict.fromkeys(job_ids))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "owner")
        return {job_id: _text(owner) or None for job_id, owner in zip(job_ids, pipe.execute())}

    def start(self, job_id: str) -> Started | None:
        """Mark the job running (once); returns its status, deadline and creation time, or None when it is gone."""
        return _started(self._start(keys=[keys.job(job_id)], args=[time.time()]))

    def begin(self, job_id: str, indices: Sequence[int], check: bool = True) -> tuple[Started | None, list[int]]:
        """What a chunk needs to start, in one round trip: :meth:`start` and :meth:`missing` together; without
        ``check`` (a chunk's first run) every index is taken as missing and only the start is asked for."""
        if not check:
            return self.start(job_id), list(indices)
        if len(indices) > RECORD_PAGE:
            return self.start(job_id), self.missing(job_id, indices)
        start_args = [keys.job(job_id), time.time()]
        missing_args = [keys.job_outputs(job_id, 0)[:-1], keys.SHARD_ITEMS, *indices]
        pipe = self.redis.pipeline(transaction=False)
        pipe.evalsha(self._start.sha, 1, *start_args)
        pipe.evalsha(self._missing.sha, 1, *missing_args)
        found, missing = pipe.execute(raise_on_error=False)
        if isinstance(found, NoScriptError) or isinstance(missing, NoScriptError):  # Redis lost its scripts
            return self.start(job_id), self.missing(job_id, indices)
        for reply in (found, missing):
            if isinstance(reply, Exception):
                raise reply
        return _started(found), [int(i) for i in missing]

    def missing(self, job_id: str, indices: Sequence[int]) -> list[int]:
        """The indices among ``indices`` that have no output or error yet."""
        prefix = keys.job_outputs(job_id, 0)[:-1]
        found: list[int] = []
        for start in range(0, len(indices), RECORD_PAGE):
            page = list(indices[start : start + RECORD_PAGE])
            found += [int(i) for i in self._missing(keys=[prefix], args=[keys.SHARD_ITEMS, *page])]
        return found

    def record(
        self, results: Iterable[ItemResult], also: Callable[[redis.client.Pipeline], None] | None = None
    ) -> dict[str, tuple[int, int]]:
        """Store finished items of any number of jobs atomically; returns (new ok, new errors) per job.

        ``also`` adds its own commands to the same pipeline (the batch's dead letters, say). A job whose last
        item this call stores is reported to :attr:`on_finish`, exactly once. The script goes in by its hash
        alone: a ``Script`` object in a pipeline makes redis-py ask ``SCRIPT EXISTS`` first, one more round
        trip per batch. Only when Redis has lost its scripts (a restart) is the call made again, by itself,
        which is safe because the script counts an item only once. More items than :data:`RECORD_PAGE` are
        written a page per call.
        """
        results = list(results)
        counts: dict[str, tuple[int, int]] = {}
        for start in range(0, len(results), RECORD_PAGE):
            page = results[start : start + RECORD_PAGE]
            for landed in self._record_page(page, also if start == 0 else None):
                before = counts.get(landed.job_id, (0, 0))
                counts[landed.job_id] = (before[0] + landed.ok, before[1] + landed.err) if landed.ok >= 0 else (-1, -1)
        return counts

    def _record_page(
        self, results: Sequence[ItemResult], also: Callable[[redis.client.Pipeline], None] | None
    ) -> list[Landed]:
        now = time.time()
        args: list[Any] = lua.head(self.bounds, now) + record_args(results)
        pipe = self.redis.pipeline(transaction=False)
        pipe.evalsha(self._record.sha, 0, *args)
        if also is not None:
            also(pipe)
        reply = pipe.execute(raise_on_error=False)[0]
        if isinstance(reply, NoScriptError):
            reply = self._record(keys=[], args=args)
        elif isinstance(reply, Exception):
            raise reply
        return self.landed(reply, now)

    def landed(self, reply: Sequence[Any], now: float) -> list[Landed]:
        """Read a storing script's reply (``{settle(), handoffs}``) to a call made at ``now``, reporting
        finished jobs and handoffs."""
        rows, handoffs = reply[0], int(reply[1])
        landed = [
            Landed(
                row[0].decode(), int(row[1]), int(row[2]), int(row[3]), bool(int(row[4])),
                _text(row[5]), _text(row[6]), float(row[7] or 0), _text(row[8]),
            )
            for row in rows
        ]
        for job in landed:
            if job.finished and self.on_finish is not None:
                self.on_finish(job.model, job.status, now - (job.created_at or now), job.tier)
        if handoffs and self.on_handoff is not None:
            self.on_handoff(handoffs)
        return landed

    def _ended(self, job_id: str, now: float) -> None:
        """The job's webhook and result files, if it asked for them, are due now. Should this fail, the looks
        through the watch sets find the job ended all the same, a little later."""
        for watch in (self.webhooks, self.result_files):
            try:
                watch.ended(job_id, now)
            except redis.RedisError:
                pass

    def fail_items(self, job_id: str, indices: Sequence[int], error: bytes) -> int:
        """Give the items at ``indices`` the (encoded) ``error`` unless they have a result; returns how many did."""
        if not indices:
            return 0
        return self.record(ItemResult(job_id, i, error, False) for i in indices).get(job_id, (0, 0))[1]

    def fail_missing(self, job_id: str, total: int, error: bytes) -> int:
        """Give every item without a result the (encoded) ``error``; returns how many were given it."""
        return sum(
            self.fail_items(job_id, self.missing(job_id, range(start, min(start + RECORD_PAGE, total))), error)
            for start in range(0, total, RECORD_PAGE)
        )

    def cancel(self, job_id: str) -> str | None:
        """Mark the job cancelled and tell the workers, whose batchers drop its waiting items."""
        now = time.time()
        status = self._cancel(keys=[keys.job(job_id), keys.cancellations()], args=[now, job_id])
        if status == b"cancelled":
            self._ended(job_id, now)
        return status.decode() if status else None

    def fail(self, job_id: str, message: str) -> None:
        now = time.time()
        self.redis.hset(keys.job(job_id), mapping={"status": "failed", "error": message, "finished_at": now})
        self._ended(job_id, now)

    def status(self, job_id: str) -> str | None:
        status = self.redis.hget(keys.job(job_id), "status")
        return status.decode() if status else None

    def next_chunks(self, job_id: str, count: int) -> range:
        """Reserve ``count`` chunk numbers of the job (a job's chunks are numbered from 0 as they are sent)."""
        last = self.redis.hincrby(keys.job(job_id), "chunks", count)
        return range(last - count, last)

    def outputs(self, job_id: str, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Finished items with ``start <= index < stop``, in index order: one HMGET per shard, one round trip."""
        if stop <= start:
            return []
        pipe = self.redis.pipeline(transaction=False)
        spans = []
        first = start
        while first < stop:
            last = min(stop, (keys.shard(first) + 1) * keys.SHARD_ITEMS)
            spans.append(first)
            pipe.hmget(keys.job_outputs(job_id, keys.shard(first)), list(range(first, last)))
            first = last
        found = []
        for first, values in zip(spans, pipe.execute()):
            found += [(first + i, v) for i, v in enumerate(values) if v is not None]
        return found

    def iter_outputs(self, job_id: str, total: int, page: int = 1000) -> Iterator[tuple[int, bytes]]:
        for start in range(0, total, page):
            yield from self.outputs(job_id, start, min(start + page, total))

    def iter_pages(self, job_id: str, total: int, page: int = 1000) -> Iterator[list[bytes | None]]:
        """Every item's stored result in index order, a page at a time (one round trip each), None where an item
        has none: what a job's files are written from, never the whole job in memory."""
        for start in range(0, total, page):
            stop = min(start + page, total)
            found: list[bytes | None] = [None] * (stop - start)
            for index, raw in self.outputs(job_id, start, stop):
                found[index - start] = raw
            yield found

    def release_outputs(self, job_id: str, total: int, keep_s: int) -> None:
        """The job's outputs are in files now: its shards go from Redis in ``keep_s`` (at once with 0) rather
        than at the job's end of life, and the record says when (:meth:`outputs_released`)."""
        pipe = self.redis.pipeline(transaction=False)
        for number in range(keys.shard(max(total - 1, 0)) + 1):
            if keep_s > 0:
                pipe.expire(keys.job_outputs(job_id, number), keep_s)
            else:
                pipe.delete(keys.job_outputs(job_id, number))
        pipe.hset(keys.job(job_id), "outputs_released_at", repr(time.time() + keep_s))
        pipe.execute()

    def wait_done(self, job_id: str, timeout_s: float) -> bool:
        """Block until the job completes or ``timeout_s`` passes; True when it completed.

        One BLPOP may block no longer than the client's socket timeout (redis-py's default is 5 s), past
        which the client gives up with a TimeoutError; so the wait is cut into slices shorter than that.
        """
        deadline = time.monotonic() + timeout_s
        while self.status(job_id) not in FINAL_STATUSES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            block_s = max(min(remaining, self._block_slice_s()), MIN_BLOCK_S)
            if self.redis.blpop([keys.job_done(job_id)], timeout=block_s) is not None:
                return True
        return True

    def _block_slice_s(self) -> float:
        socket_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        return min(socket_timeout / 2, MAX_BLOCK_S) if socket_timeout else MAX_BLOCK_S


def _started(found: Sequence[bytes] | None) -> Started | None:
    if not found:
        return None
    status, deadline, created_at = found
    return Started(status.decode(), float(deadline) if deadline else None, float(created_at or 0))


def _parse(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not raw:
        return None
    job = {k.decode(): v.decode() for k, v in raw.items()}
    for name in ("total", "succeeded", "failed", "cached", "chunks", "webhook_attempts"):
        job[name] = int(job.get(name, 0))
    for name in (
        "created_at", "started_at", "finished_at", "cancelled_at", "deadline", "expires_at", "webhook_at",
        "outputs_released_at",
    ):
        job[name] = float(job[name]) if name in job else None
    for name in ("metadata", "webhook", "results", "result_files"):
        job[name] = orjson.loads(job[name]) if name in job else None
    return job


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


def _field(value: Any) -> bytes | str | int | float:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value)
    return value
