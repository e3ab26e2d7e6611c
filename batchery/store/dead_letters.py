"""The dead-letter store: items that exhausted their retries, kept with their input, error and attempts.

An operator lists them (``GET /v1/dead-letters``, ``batchery dlq list``), retries them (``batchery dlq retry``:
each goes back into its own job, which reopens until the item lands again) or purges them. Entries are written
in the same Redis pipeline as the batch's outputs, so an item is never an error without its dead letter.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import orjson
import redis

from batchery import keys

_REOPEN = """
local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value or string.sub(value, 1, 1) ~= 'e' then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failed', -1)
if redis.call('HGET', KEYS[1], 'status') == 'completed' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  redis.call('HDEL', KEYS[1], 'finished_at')
end
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    index: int
    model: str
    input: Any
    error: dict[str, str]
    attempts: int
    id: str = ""
    at: float = 0.0

    def encode(self) -> bytes:
        entry = {**asdict(self), "id": self.id or uuid.uuid4().hex, "at": self.at or time.time()}
        return orjson.dumps(entry)


class DeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._reopen = client.register_script(_REOPEN)

    def add(self, pipe: redis.client.Pipeline, letters: list[DeadLetter]) -> None:
        """Queue the entries on ``pipe``, the pipeline that also writes their items' errors."""
        if letters:
            pipe.lpush(keys.dead_letters(), *(letter.encode() for letter in letters))
            pipe.ltrim(keys.dead_letters(), 0, keys.DEAD_LETTERS_MAX - 1)

    def count(self) -> int:
        return self.redis.llen(keys.dead_letters())

    def list(self, offset: int = 0, limit: int = 100, model: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        entries = [orjson.loads(raw) for raw in self.redis.lrange(keys.dead_letters(), offset, offset + limit - 1)]
        return [e for e in entries if model is None or e["model"] == model]

    def each(self, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every entry, newest first, read a page per round trip."""
        start = 0
        while raw := self.redis.lrange(keys.dead_letters(), start, start + page - 1):
            yield from (orjson.loads(entry) for entry in raw)
            start += page

    def purge(self) -> int:
        count = self.count()
        self.redis.delete(keys.dead_letters())
        return count

    def take(self, entry: dict[str, Any]) -> bool:
        """Reopen the entry's item in its job (its error removed, the job running again) and drop the entry.

        False when the item no longer holds an error (already retried, or the job expired).
        """
        raw = orjson.dumps(entry)
        self.redis.lrem(keys.dead_letters(), 1, raw)
        job_id, index = entry["job_id"], entry["index"]
        return bool(self._reopen(keys=[keys.job(job_id), keys.job_outputs(job_id, keys.shard(index))], args=[index]))
