"""Claiming a job's items at submission: each is served from the cache, computed here, or shared.

One Lua call per page of items decides, atomically per item, between three outcomes:

- **hit**: the cache holds the output; it is written into the job at once and never reaches a worker;
- **own**: nobody is computing this input; the job claims it (an in-flight key) and sends it to a worker;
- **wait**: another item (of this job or another) is computing it; this item's address joins the waiters,
  and the owner's record script hands the output to every waiter when it lands (see :mod:`batchery.store.jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson
import redis

from batchery import keys
from batchery.cache.digest import cache_key
from batchery.models.registry import ModelSpec

PAGE = 1000

_CLAIM = """
local prefix, job, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 3 do
  local index, key, input = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local entry = prefix .. key
  local value = redis.call('GET', entry)
  if value then
    out[#out + 1] = {index, 'hit', value}
  elseif redis.call('SET', entry .. ':inflight', input, 'NX', 'EX', ttl) then
    redis.call('HSET', KEYS[1], index, key)
    out[#out + 1] = {index, 'own'}
  else
    redis.call('RPUSH', entry .. ':waiters', job .. '|' .. index)
    redis.call('EXPIRE', entry .. ':waiters', ttl)
    out[#out + 1] = {index, 'wait'}
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return out
"""


@dataclass
class Claim:
    """The outcome for one job's items: cached outputs, the indices to compute, and how many wait on others."""

    hits: list[tuple[int, bytes]] = field(default_factory=list)
    owned: list[int] = field(default_factory=list)
    waiting: int = 0


class ResultCache:
    def __init__(self, client: redis.Redis, job_ttl_s: int) -> None:
        self.redis = client
        self.job_ttl_s = job_ttl_s
        self._claim = client.register_script(_CLAIM)

    def claim(self, job_id: str, spec: ModelSpec, inputs: Sequence[Any], indices: Sequence[int] | None = None) -> Claim:
        """Claim items ``indices`` (default: all) of a job whose inputs are ``inputs`` (same order as indices)."""
        indices = range(len(inputs)) if indices is None else indices
        claim = Claim()
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(inputs), PAGE):
            args: list[Any] = [keys.cache_prefix(), job_id, self.job_ttl_s]
            for index, value in zip(indices[start : start + PAGE], inputs[start : start + PAGE]):
                args.extend((index, cache_key(spec, value), orjson.dumps(value)))
            self._claim(keys=[keys.job_owns(job_id)], args=args, client=pipe)
        for page in pipe.execute():
            for entry in page:
                index, outcome = int(entry[0]), entry[1]
                if outcome == b"hit":
                    claim.hits.append((index, entry[2]))
                elif outcome == b"own":
                    claim.owned.append(index)
                else:
                    claim.waiting += 1
        return claim

    def abandon(self, spec: ModelSpec, inputs: Sequence[Any]) -> None:
        """Drop the in-flight claims on ``inputs`` of a job that could not be sent, so that no later item
        waits on a computation that will never happen; the next identical item claims it afresh."""
        keys_ = [keys.cache_entry(cache_key(spec, value)) + ":inflight" for value in inputs]
        for start in range(0, len(keys_), PAGE):
            self.redis.delete(*keys_[start : start + PAGE])
