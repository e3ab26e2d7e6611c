"""Chunks as Redis records: the broker carries only a chunk's name, and Redis knows where every chunk is.

A chunk is written here (its indices and inputs) before its Celery message is published, and deleted once
its items are stored. In between it is always in one of two places, each a small index the janitor
(:mod:`batchery.recovery`) reads:

- ``queued:<queue>``: sent and not yet taken by a worker, scored by when it was sent;
- ``holding:<hostname>``: taken by that worker, which is running it.

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

_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return nil
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[2])
return redis.call('HMGET', KEYS[1], 'indices', 'inputs')
"""

_FINISH = """
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_REQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('HSET', KEYS[1], 'task', ARGV[2], 'sent', ARGV[3])
redis.call('HDEL', KEYS[1], 'holder')
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('ZADD', ARGV[4] .. queue, ARGV[3], ARGV[1])
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
        self._requeue = client.register_script(_REQUEUE)

    def add(
        self,
        pipe: redis.client.Pipeline,
        job_id: str,
        number: int,
        model: str,
        queue: str,
        indices: Sequence[int],
        inputs_json: bytes,
        task_id: str,
        sent_at: float,
        expires_at: int,
    ) -> None:
        """Queue the chunk's record on ``pipe``: written before its message, it lives until its items are stored."""
        key = keys.chunk(job_id, number)
        pipe.hset(key, mapping={
            "model": model, "queue": queue, "indices": pack_indices(indices), "inputs": inputs_json,
            "count": len(indices), "task": task_id, "sent": repr(sent_at),
        })
        pipe.expireat(key, expires_at)
        pipe.zadd(keys.queued(queue), {keys.chunk_ref(job_id, number): sent_at})

    def take(self, job_id: str, number: int, queue: str, hostname: str) -> tuple[list[int], list[Any]] | None:
        """A worker takes the chunk to run it: its (indices, inputs), or None when it is done (or gone)."""
        ref = keys.chunk_ref(job_id, number)
        found = self._take(
            keys=[keys.chunk(job_id, number), keys.queued(queue), keys.holding(hostname), keys.holders()],
            args=[ref, hostname],
        )
        if found is None:
            return None
        return unpack_indices(found[0]), orjson.loads(found[1])

    def finish(self, job_id: str, number: int, hostname: str) -> bool:
        """The chunk's items are all stored: it is done. False when it was done already."""
        ref = keys.chunk_ref(job_id, number)
        return bool(self._finish(keys=[keys.chunk(job_id, number), keys.holding(hostname)], args=[ref]))

    def requeue(self, job_id: str, number: int, task_id: str, sent_at: float, holder: str | None = None) -> tuple[str, str] | None:
        """Mark the chunk sent again as ``task_id`` (and no longer held by ``holder``); its (model, queue),
        or None when it is done."""
        found = self._requeue(
            keys=[keys.chunk(job_id, number), keys.holding(holder) if holder else ""],
            args=[keys.chunk_ref(job_id, number), task_id, repr(sent_at), keys.queued("")],
        )
        return (found[0].decode(), found[1].decode()) if found else None

    def get(self, job_id: str, number: int) -> ChunkRecord | None:
        model, queue, task, sent, holder = self.redis.hmget(
            keys.chunk(job_id, number), "model", "queue", "task", "sent", "holder"
        )
        if model is None:
            return None
        return ChunkRecord(
            job_id, number, model.decode(), queue.decode(), task.decode(), float(sent), holder.decode() if holder else None
        )

    def delete(self, job_id: str, numbers: Sequence[int], queue: str) -> None:
        """Forget chunks that were never sent (their job could not be queued)."""
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.delete(keys.chunk(job_id, number))
        if numbers:
            pipe.zrem(keys.queued(queue), *(keys.chunk_ref(job_id, n) for n in numbers))
        pipe.execute()

    def queued_before(self, queue: str, before: float, limit: int = 500) -> list[tuple[str, int]]:
        """Chunks of ``queue`` sent before ``before`` and taken by no worker yet, oldest first."""
        refs = self.redis.zrangebyscore(keys.queued(queue), "-inf", f"({before!r}", start=0, num=limit)
        return [keys.parse_chunk_ref(ref.decode()) for ref in refs]

    def queued_count(self, queue: str) -> int:
        return self.redis.zcard(keys.queued(queue))

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
