"""Job state and item outputs in Redis.

Every write a batch makes is one round trip: a pipeline with one script call per job in the batch. The
script stores each output with HSETNX and counts only the fields it created, so a chunk that runs twice
(redelivered after a crash, or a duplicate) can neither double-count nor lose an item, and it flips the job
to ``completed`` in the same atomic step in which the last item is accounted for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import orjson
import redis

from batchery import keys
from batchery.redis_urls import redis_client

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATUSES = ("completed", "failed", "cancelled")
#: The longest one blocking read waits before the job's status is read again.
MAX_BLOCK_S = 2.0

_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, -1, 0, {}, {}} end
local prefix, cache_ttl, cache_max = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local owns = redis.call('EXISTS', KEYS[4]) == 1
local ok, err, cached, shared = 0, 0, 0, {}
for i = 8, #ARGV, 3 do
  local index, value, flag = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[2], index, value) == 1 then
    if flag == '1' or flag == 'C' then ok = ok + 1 else err = err + 1 end
    if flag == 'C' or flag == 'E' then cached = cached + 1 end
    local key = owns and redis.call('HGET', KEYS[4], index)
    if key then
      redis.call('HDEL', KEYS[4], index)
      local entry = prefix .. key
      if flag == '1' and cache_ttl > 0 then
        redis.call('SET', entry, value, 'EX', cache_ttl)
        redis.call('ZADD', ARGV[6], ARGV[2], key)
      end
      local group = {index, key, redis.call('GET', entry .. ':inflight') or ''}
      redis.call('DEL', entry .. ':inflight')
      for _, waiter in ipairs(redis.call('LRANGE', entry .. ':waiters', 0, -1)) do group[#group + 1] = waiter end
      redis.call('DEL', entry .. ':waiters')
      if #group > 3 then shared[#shared + 1] = group end
    end
  end
end
if cache_max > 0 then
  local over = redis.call('ZCARD', ARGV[6]) - cache_max
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', ARGV[6], over)
    for j = 1, #oldest, 2 do redis.call('DEL', prefix .. oldest[j]) end
  end
end
if ok + err == 0 then return {0, 0, 0, shared, {}} end
if ok + err > cached then
  local backlog = ARGV[7] .. redis.call('HGET', KEYS[1], 'model')
  if redis.call('DECRBY', backlog, ok + err - cached) < 0 then redis.call('SET', backlog, 0) end
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
local s = redis.call('HINCRBY', KEYS[1], 'succeeded', ok)
local f = redis.call('HINCRBY', KEYS[1], 'failed', err)
if cached > 0 then redis.call('HINCRBY', KEYS[1], 'cached', cached) end
local done = {}
if s + f >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[2])
  if redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'status', 'completed')
  end
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  done = redis.call('HMGET', KEYS[1], 'model', 'status', 'created_at')
end
return {ok, err, cached, shared, done}
"""

_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running') end
return redis.call('HMGET', KEYS[1], 'status', 'deadline', 'created_at')
"""

_MISSING = """
local missing = {}
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then missing[#missing + 1] = ARGV[i] end
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


@dataclass(frozen=True)
class ItemResult:
    """One finished item on its way to Redis: ``ok`` is False when ``value`` is an encoded error.

    ``cached`` marks an item this job did not compute: a cache hit, or an identical item's result shared.
    """

    job_id: str
    index: int
    value: bytes
    ok: bool
    cached: bool = False

    @property
    def flag(self) -> str:
        """How the record script counts it: ok, error, error that releases its waiters, cached ok or error."""
        if self.cached:
            return "C" if self.ok else "E"
        if self.ok:
            return "1"
        return "R" if orjson.loads(self.value[1:]).get("code") in JOB_SCOPED_ERRORS else "0"


#: Called with (cache key, ["<job id>|<index>", ...], input JSON) when an item others waited on ended with
#: an error of its own job's making; the waiters must be computed anew (see :mod:`batchery.cache`).
ReleaseHook = Callable[[str, list[str], bytes], None]
#: Called with (model, final status, seconds from submission) by the one write that ends a job's last item.
FinishHook = Callable[[str, str, float], None]


class JobStore:
    """Reads and writes jobs; safe to share between threads (redis-py pools its connections)."""

    def __init__(self, client: redis.Redis, job_ttl_s: int, cache_ttl_s: int = 0, cache_max_entries: int = 0) -> None:
        self.redis = client
        self.job_ttl_s = job_ttl_s
        self.cache_ttl_s = cache_ttl_s
        self.cache_max_entries = cache_max_entries
        self.on_release: ReleaseHook | None = None
        self.on_finish: FinishHook | None = None
        self._record = client.register_script(_RECORD)
        self._start = client.register_script(_START)
        self._missing = client.register_script(_MISSING)
        self._cancel = client.register_script(_CANCEL)

    @classmethod
    def from_url(cls, url: str, job_ttl_s: int, cache_ttl_s: int = 0, cache_max_entries: int = 0) -> "JobStore":
        return cls(redis_client(url), job_ttl_s, cache_ttl_s, cache_max_entries)

    def create(self, job_id: str, fields: dict[str, Any], ttl_s: int | None = None) -> None:
        now = time.time()
        values = {**fields, "id": job_id, "status": "queued", "created_at": now, "succeeded": 0, "failed": 0}
        ttl = ttl_s or self.job_ttl_s
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), mapping={k: _field(v) for k, v in values.items()})
        pipe.expire(keys.job(job_id), ttl)
        pipe.zadd(keys.recent_jobs(), {job_id: now})
        pipe.zremrangebyrank(keys.recent_jobs(), 0, -keys.RECENT_JOBS - 1)
        pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        return _parse(self.redis.hgetall(keys.job(job_id)))

    def get_many(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The jobs among ``job_ids`` that still exist, in that order, read in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [job for raw in pipe.execute() if (job := _parse(raw)) is not None]

    def claim_idempotency_key(self, client_key: str, job_id: str) -> str:
        """The job id that owns ``client_key``: ``job_id`` if this call claimed it, else the first claimant's."""
        key = keys.idempotency(client_key)
        if self.redis.set(key, job_id, nx=True, ex=self.job_ttl_s):
            return job_id
        return self.redis.get(key).decode()

    def recent(self, limit: int) -> list[str]:
        return [m.decode() for m in self.redis.zrevrange(keys.recent_jobs(), 0, limit - 1)]

    def start(self, job_id: str) -> Started | None:
        """Mark the job running (once); returns its status, deadline and creation time, or None when it is gone."""
        found = self._start(keys=[keys.job(job_id)], args=[time.time()])
        if not found:
            return None
        status, deadline, created_at = found
        return Started(status.decode(), float(deadline) if deadline else None, float(created_at or 0))

    def missing(self, job_id: str, indices: Sequence[int]) -> list[int]:
        """The indices among ``indices`` that have no output or error yet."""
        return [int(i) for i in self._missing(keys=[keys.job_outputs(job_id)], args=list(indices))]

    def record(
        self, results: Iterable[ItemResult], also: Callable[[redis.client.Pipeline], None] | None = None
    ) -> dict[str, tuple[int, int]]:
        """Store finished items of any number of jobs in one round trip; returns (new ok, new errors) per job.

        ``also`` adds its own commands to the same pipeline (the batch's dead letters, say). An item that
        others waited on (see :mod:`batchery.cache`) hands its result to them in a second round trip. A job
        whose last item this call stores is reported to :attr:`on_finish`, exactly once.
        """
        by_job: dict[str, list[Any]] = {}
        by_address: dict[tuple[str, int], ItemResult] = {}
        for r in results:
            by_job.setdefault(r.job_id, []).extend((r.index, r.value, r.flag))
            by_address[(r.job_id, r.index)] = r
        if not by_job:
            return {}
        head = [
            self.job_ttl_s, time.time(), keys.cache_prefix(), self.cache_ttl_s, self.cache_max_entries,
            keys.cache_index(), keys.backlog(""),
        ]
        pipe = self.redis.pipeline(transaction=False)
        for job_id, args in by_job.items():
            self._record(
                keys=[keys.job(job_id), keys.job_outputs(job_id), keys.job_done(job_id), keys.job_owns(job_id)],
                args=[*head, *args],
                client=pipe,
            )
        if also is not None:
            also(pipe)
        counts = {}
        for job_id, (ok, err, _cached, groups, done) in zip(by_job, pipe.execute()):
            counts[job_id] = (ok, err)
            if done and self.on_finish is not None:
                model, status, created_at = (v.decode() if v else "" for v in done)
                self.on_finish(model, status, head[1] - float(created_at or head[1]))
            for group in groups:
                self._share(by_address[(job_id, int(group[0]))], group[1].decode(), group[2], [w.decode() for w in group[3:]])
        return counts

    def _share(self, owner: ItemResult, key: str, input_json: bytes, waiters: list[str]) -> None:
        """Hand an owner's result to the items that waited on it, or have them computed anew."""
        if owner.flag == "R" and self.on_release is not None and input_json:
            self.on_release(key, waiters, input_json)
            return
        self.record(ItemResult(job, int(index), owner.value, owner.ok, cached=True) for job, index in map(_address, waiters))

    def fail_items(self, job_id: str, indices: Sequence[int], error: bytes) -> int:
        """Give the items at ``indices`` the (encoded) ``error`` unless they have a result; returns how many did."""
        if not indices:
            return 0
        return self.record(ItemResult(job_id, i, error, False) for i in indices).get(job_id, (0, 0))[1]

    def fail_missing(self, job_id: str, total: int, error: bytes, page: int = 10_000) -> int:
        """Give every item without a result the (encoded) ``error``; returns how many were given it."""
        return sum(
            self.fail_items(job_id, self.missing(job_id, range(start, min(start + page, total))), error)
            for start in range(0, total, page)
        )

    def cancel(self, job_id: str) -> str | None:
        """Mark the job cancelled and tell the workers, whose batchers drop its waiting items."""
        status = self._cancel(keys=[keys.job(job_id), keys.cancellations()], args=[time.time(), job_id])
        return status.decode() if status else None

    def fail(self, job_id: str, message: str) -> None:
        self.redis.hset(keys.job(job_id), mapping={"status": "failed", "error": message, "finished_at": time.time()})

    def status(self, job_id: str) -> str | None:
        status = self.redis.hget(keys.job(job_id), "status")
        return status.decode() if status else None

    def outputs(self, job_id: str, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Finished items with ``start <= index < stop``, in index order."""
        if stop <= start:
            return []
        values = self.redis.hmget(keys.job_outputs(job_id), list(range(start, stop)))
        return [(start + i, v) for i, v in enumerate(values) if v is not None]

    def iter_outputs(self, job_id: str, total: int, page: int = 1000) -> Iterator[tuple[int, bytes]]:
        for start in range(0, total, page):
            yield from self.outputs(job_id, start, min(start + page, total))

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
            if self.redis.blpop([keys.job_done(job_id)], timeout=min(remaining, self._block_slice_s())) is not None:
                return True
        return True

    def _block_slice_s(self) -> float:
        socket_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        return min(socket_timeout / 2, MAX_BLOCK_S) if socket_timeout else MAX_BLOCK_S


def _parse(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not raw:
        return None
    job = {k.decode(): v.decode() for k, v in raw.items()}
    for name in ("total", "succeeded", "failed", "cached"):
        job[name] = int(job.get(name, 0))
    for name in ("created_at", "started_at", "finished_at", "cancelled_at", "deadline"):
        job[name] = float(job[name]) if name in job else None
    job["metadata"] = orjson.loads(job["metadata"]) if "metadata" in job else None
    return job


def _address(waiter: str) -> tuple[str, str]:
    job_id, _, index = waiter.rpartition("|")
    return job_id, index


def _field(value: Any) -> bytes | str | int | float:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value)
    return value
