"""How many items of each model are sent to workers and not yet done: the bound behind the API's 429.

The counter rises when a job's items are sent and falls in the record script as each item gets its first
output or error, so a redelivered chunk cannot count twice. It counts what the workers hold as well as what
waits in the broker: a worker's threads take chunks long before its batcher runs them. Reading the broker's
queue length instead would miss those, and would count chunks, not items.

Should the counter drift anyway (queues purged by hand, say), the janitor sets it back to zero once the model
has no chunk left anywhere and nothing was counted in for :data:`batchery.keys.BACKLOG_QUIET_S`.
"""

from __future__ import annotations

import time

import redis

from batchery import keys

_RESERVE = """
local queued = tonumber(redis.call('GET', KEYS[1]) or '0')
local n, bound = tonumber(ARGV[1]), tonumber(ARGV[2])
if bound > 0 and queued > 0 and queued + n > bound then return {0, queued} end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return {1, redis.call('INCRBY', KEYS[1], n)}
"""

_RECONCILE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left ~= 0 then redis.call('SET', KEYS[1], 0) end
return left
"""

_RELEASE = """
local left = redis.call('DECRBY', KEYS[1], ARGV[1])
if left < 0 then redis.call('SET', KEYS[1], 0) end
return left
"""


class Backlog:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._reconcile = client.register_script(_RECONCILE)

    def reserve(self, model: str, items: int, bound: int) -> tuple[bool, int]:
        """Count ``items`` in unless that would take the backlog past ``bound``; returns (taken, backlog).

        A job larger than the bound is still taken when nothing is queued, so no job is impossible to submit.
        """
        taken, queued = self._reserve(
            keys=[keys.backlog(model), keys.backlog_at(model)], args=[items, bound, time.time(), keys.BACKLOG_QUIET_S]
        )
        return bool(taken), int(queued)

    def release(self, model: str, items: int) -> None:
        if items > 0:
            self._release(keys=[keys.backlog(model)], args=[items])

    def queued(self, model: str) -> int:
        return int(self.redis.get(keys.backlog(model)) or 0)

    def queued_many(self, models: list[str]) -> dict[str, int]:
        """Each model's backlog, in one round trip (what a scaling pool reads every second)."""
        if not models:
            return {}
        return {model: int(value or 0) for model, value in zip(models, self.redis.mget([keys.backlog(m) for m in models]))}

    def reconcile_idle(self, model: str) -> int:
        """Zero the counter of a model that has no chunk anywhere (the caller checked); returns what it held,
        or -1 when items were counted in too recently to be sure none is on its way."""
        return int(self._reconcile(keys=[keys.backlog(model), keys.backlog_at(model)]))
