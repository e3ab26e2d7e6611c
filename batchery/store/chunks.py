"""Chunks as Redis records: the broker carries only a chunk's name, and Redis knows where every chunk is.

A chunk is written here (its indices and inputs) before any message names it, and deleted once its items are
stored. In between it is always in exactly one of three places, each a small index the janitor
(:mod:`batchery.recovery`) reads:

- ``job:<id>:held``: not sent yet. A job's chunks are released into the broker progressively: each queue (a
  model and tier) has a budget of chunks in flight, and its *lane*, a ring of the jobs with chunks held back,
  is served round-robin, one chunk a turn. So a huge job never puts all its chunks in front of everybody, and
  a small job submitted after it waits for about one chunk, not for the huge job;
- ``queued:<queue>``: sent and not yet taken by a worker, scored by when it was sent;
- ``running:<queue>`` and ``holding:<hostname>``: taken by that worker, which is running it.

So whatever a broker or a crash does to a message (a publish that failed, a message popped by a worker killed
before kombu recorded it as unacknowledged, a worker SIGKILLed holding chunks), the chunk itself is still
here, and can be sent again. Running a chunk twice is harmless: an item's result is stored only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import orjson
import redis

from batchery import keys

#: A budget no lane reaches: every chunk is released at once (the interactive tier's).
UNBOUNDED = 1 << 30

_RELEASE_LIB = """
local P = ARGV[1]
-- Release chunks of the lane of ``queue`` round-robin while its chunks in flight are under ``budget``.
-- Returns {job, number, model, task id, trace} for each chunk released, for the caller to publish.
local function release(queue, budget, now)
  local out = {}
  local ring = P .. 'lane:' .. queue
  local inflight = redis.call('ZCARD', P .. 'queued:' .. queue) + redis.call('SCARD', P .. 'running:' .. queue)
  while inflight < budget do
    local job = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    if not job then break end
    local held = P .. 'job:' .. job .. ':held'
    local number = redis.call('LPOP', held)
    if redis.call('LLEN', held) == 0 then redis.call('LREM', ring, 0, job) end
    if number then
      local chunk = P .. 'job:' .. job .. ':chunk:' .. number
      if redis.call('EXISTS', chunk) == 1 then
        redis.call('ZADD', P .. 'queued:' .. queue, now, job .. ':' .. number)
        redis.call('HSET', chunk, 'sent', now)
        local found = redis.call('HMGET', chunk, 'model', 'task', 'trace')
        out[#out + 1] = {job, number, found[1], found[2], found[3] or ''}
        inflight = inflight + 1
      end
    end
  end
  return out
end
"""

_TAKE = """
-- KEYS: chunk, queued, running, holding, holders; ARGV: ref, hostname
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return nil
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[2])
local found = redis.call('HMGET', KEYS[1], 'indices', 'inputs', 'tier')
found[4] = redis.call('HINCRBY', KEYS[1], 'takes', 1)
return found
"""

_FINISH = _RELEASE_LIB + """
-- KEYS: chunk, holding; ARGV: prefix, ref, queue, budget, now
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', P .. 'running:' .. ARGV[3], ARGV[2])
local done = redis.call('DEL', KEYS[1])
return {done, release(ARGV[3], tonumber(ARGV[4]), ARGV[5])}
"""

_PUMP = _RELEASE_LIB + """
-- ARGV: prefix, queue, budget, now
return release(ARGV[2], tonumber(ARGV[3]), ARGV[4])
"""

_REQUEUE = """
-- KEYS: chunk, holding ('' for none); ARGV: ref, task id, sent at, prefix
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'task', ARGV[2]) end
redis.call('HSET', KEYS[1], 'sent', ARGV[3])
redis.call('HDEL', KEYS[1], 'holder')
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('SREM', ARGV[4] .. 'running:' .. queue, ARGV[1])
redis.call('ZADD', ARGV[4] .. 'queued:' .. queue, ARGV[3], ARGV[1])
if KEYS[2] ~= '' then redis.call('SREM', KEYS[2], ARGV[1]) end
return redis.call('HMGET', KEYS[1], 'model', 'queue')
"""


@dataclass(frozen=True)
class ChunkRecord:
    """What the janitor needs to send a chunk again: its model, queue and the id of its last message."""

    job_id: str
    number: int
    model: str
    queue: str
    task_id: str
    sent_at: float
    holder: str | None
    trace: str = ""


@dataclass(frozen=True)
class Released:
    """A chunk let out of its lane, to be published by whoever released it (``trace``: its trace context)."""

    job_id: str
    number: int
    model: str
    queue: str
    task_id: str
    trace: str = ""


@dataclass(frozen=True)
class Taken:
    """A chunk as a worker takes it: its indices, inputs and tier.

    ``first`` is True when no worker took it before: none of its items can have a result of its computing,
    so the worker need not ask Redis which are still missing (one ``HEXISTS`` an item). Items another path
    ended meanwhile (a cancel, a deadline) are still ended, not computed, by the job's status, and the storing
    script writes only items without a result: an item is never counted twice either way.
    """

    indices: list[int]
    inputs: list[Any]
    tier: str
    first: bool = False


def pack_indices(indices: Sequence[int]) -> bytes:
    """A run of consecutive indices as ``r:<start>:<count>``; a gappy one (cache hits removed) as JSON."""
    first = indices[0]
    if indices[-1] - first == len(indices) - 1 and list(indices) == list(range(first, first + len(indices))):
        return f"r:{first}:{len(indices)}".encode()
    return orjson.dumps(list(indices))


def unpack_indices(raw: bytes) -> list[int]:
    if raw.startswith(b"r:"):
        _, start, count = raw.split(b":")
        return list(range(int(start), int(start) + int(count)))
    return orjson.loads(raw)


class ChunkStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._pump = client.register_script(_PUMP)
        self._requeue = client.register_script(_REQUEUE)

    def add(
        self,
        pipe: redis.client.Pipeline,
        job_id: str,
        number: int,
        model: str,
        queue: str,
        tier: str,
        indices: Sequence[int],
        inputs_json: bytes,
        task_id: str,
        sent_at: float,
        expires_at: int,
        held: bool,
        trace: str = "",
    ) -> None:
        """Queue the chunk's record on ``pipe``, written before any message names it, and either hold it back
        in its job's lane (``held``) or mark it sent now. ``trace`` is the context its messages continue, kept
        for whoever publishes it (:mod:`batchery.tracing.messages`); '' when nothing traces it."""
        key = keys.chunk(job_id, number)
        record = {
            "model": model, "queue": queue, "tier": tier, "indices": pack_indices(indices), "inputs": inputs_json,
            "count": len(indices), "task": task_id, "sent": repr(sent_at),
        }
        if trace:
            record["trace"] = trace
        pipe.hset(key, mapping=record)
        pipe.expireat(key, expires_at)
        if held:
            pipe.rpush(keys.job_held(job_id), number)
            pipe.expireat(keys.job_held(job_id), expires_at)
        else:
            pipe.zadd(keys.queued(queue), {keys.chunk_ref(job_id, number): sent_at})

    def enter_lane(self, pipe: redis.client.Pipeline, job_id: str, queue: str) -> None:
        """The job joins the ring of its queue's lane, after its held chunks are written."""
        pipe.rpush(keys.lane(queue), job_id)

    def release(self, queue: str, budget: int, now: float) -> list[Released]:
        """Let chunks out of the lane of ``queue`` while fewer than ``budget`` are in flight; they are marked
        sent, and the caller publishes them (a chunk whose publish is lost is found by the janitor)."""
        return _released(self._pump(keys=[], args=[keys.PREFIX + ":", queue, budget, repr(now)]), queue)

    def take(self, job_id: str, number: int, queue: str, hostname: str) -> Taken | None:
        """A worker takes the chunk to run it; None when it is done (or gone)."""
        ref = keys.chunk_ref(job_id, number)
        found = self._take(
            keys=[keys.chunk(job_id, number), keys.queued(queue), keys.running(queue), keys.holding(hostname), keys.holders()],
            args=[ref, hostname],
        )
        if found is None:
            return None
        indices, inputs, tier, takes = found
        return Taken(unpack_indices(indices), orjson.loads(inputs), tier.decode() if tier else "standard", takes == 1)

    def finish(self, job_id: str, number: int, queue: str, hostname: str, budget: int, now: float) -> tuple[bool, list[Released]]:
        """The chunk's items are all stored: it is done (False when it was done already), and its place in
        flight goes to the next chunk of its lane, returned for the caller to publish."""
        done, released = self._finish(
            keys=[keys.chunk(job_id, number), keys.holding(hostname)],
            args=[keys.PREFIX + ":", keys.chunk_ref(job_id, number), queue, budget, repr(now)],
        )
        return bool(done), _released(released, queue)

    def requeue(self, job_id: str, number: int, task_id: str, sent_at: float, holder: str | None = None) -> tuple[str, str] | None:
        """Mark the chunk sent again as ``task_id`` ('' keeps its message id: the same message goes back) and
        no longer held by ``holder``; its (model, queue), or None when it is done."""
        found = self._requeue(
            keys=[keys.chunk(job_id, number), keys.holding(holder) if holder else ""],
            args=[keys.chunk_ref(job_id, number), task_id, repr(sent_at), keys.PREFIX + ":"],
        )
        return (found[0].decode(), found[1].decode()) if found else None

    def get(self, job_id: str, number: int) -> ChunkRecord | None:
        model, queue, task, sent, holder, trace = self.redis.hmget(
            keys.chunk(job_id, number), "model", "queue", "task", "sent", "holder", "trace"
        )
        if model is None:
            return None
        holder = holder.decode() if holder else None
        return ChunkRecord(
            job_id, number, model.decode(), queue.decode(), task.decode(), float(sent), holder, trace.decode() if trace else ""
        )

    def delete(self, job_id: str, numbers: Sequence[int], queue: str) -> None:
        """Forget chunks that were never sent (their job could not be queued)."""
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.delete(keys.chunk(job_id, number))
        if numbers:
            pipe.zrem(keys.queued(queue), *(keys.chunk_ref(job_id, n) for n in numbers))
        pipe.delete(keys.job_held(job_id))
        pipe.lrem(keys.lane(queue), 0, job_id)
        pipe.execute()

    def queued_before(self, queue: str, before: float, limit: int = 500) -> list[tuple[str, int]]:
        """Chunks of ``queue`` sent before ``before`` and taken by no worker yet, oldest first."""
        refs = self.redis.zrangebyscore(keys.queued(queue), "-inf", f"({before!r}", start=0, num=limit)
        return [keys.parse_chunk_ref(ref.decode()) for ref in refs]

    def open_count(self, queue: str) -> int:
        """Chunks of ``queue`` sent and not done, plus jobs with chunks still held back: 0 when it is idle."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.queued(queue))
        pipe.scard(keys.running(queue))
        pipe.llen(keys.lane(queue))
        return sum(pipe.execute())

    def backlog(self, queue: str) -> dict[str, int]:
        """Chunks of ``queue`` queued in the broker, running in a worker, and held back (with their jobs)."""
        jobs = [job.decode() for job in self.redis.lrange(keys.lane(queue), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.queued(queue))
        pipe.scard(keys.running(queue))
        for job_id in jobs:
            pipe.llen(keys.job_held(job_id))
        queued, running, *held = pipe.execute()
        return {"queued_chunks": queued, "running_chunks": running, "held_chunks": sum(held), "held_jobs": len(jobs)}

    def lanes_waiting(self, queue: str) -> int:
        return self.redis.llen(keys.lane(queue))

    def holders(self) -> list[str]:
        return sorted(h.decode() for h in self.redis.smembers(keys.holders()))

    def held_by(self, hostname: str) -> list[tuple[str, int]]:
        return [keys.parse_chunk_ref(ref.decode()) for ref in self.redis.smembers(keys.holding(hostname))]

    def forget_holder(self, hostname: str) -> None:
        """A dead worker's holding set, once each of its chunks was sent again."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.holding(hostname))
        pipe.srem(keys.holders(), hostname)
        pipe.execute()

    def prune_running(self, queue: str) -> int:
        """Drop from the running set chunks whose record is gone (expired with their job): they are in flight
        no more, and must not take a lane's budget for ever. Returns how many."""
        refs = [ref.decode() for ref in self.redis.smembers(keys.running(queue))]
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.exists(keys.chunk(*keys.parse_chunk_ref(ref)))
        gone = [ref for ref, exists in zip(refs, pipe.execute()) if not exists]
        if gone:
            self.redis.srem(keys.running(queue), *gone)
        return len(gone)


def _released(rows: list[Any], queue: str) -> list[Released]:
    return [
        Released(job.decode(), int(number), model.decode(), queue, task.decode(), trace.decode())
        for job, number, model, task, trace in rows
    ]
