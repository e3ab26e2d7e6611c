"""Handoffs: work a storing script could not finish in one call, kept in Redis until it is done.

Two kinds, both left by the script that stored an owner's result (or abandoned its claim), in the same atomic
step, so that nothing about a waiting item lives only in a process's memory:

- ``share``: the owner's result, and more waiters than one call may serve; they are served a page per call.
- ``release``: the owner ended for reasons of its own job (cancelled, past its deadline) or its claim was
  abandoned; its waiters must be computed anew, by whoever drains the handoff (the workers' janitor).

A handoff is removed only once its last waiter is served, so a process that dies half-way leaves it for the
next one; serving a waiter twice is harmless, since a result is stored only once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from batchery import keys
from batchery.store import JobStore, lua

_SHARE_PAGE = lua.script("""
-- ARGV after the head: handoff number, page size.
local entry = C.handoff_key .. ':' .. ARGV[FIRST]
local value, ok = unpack(redis.call('HMGET', entry, 'value', 'ok'))
local waiters = entry .. ':waiters'
if value then
  for _, address in ipairs(redis.call('LPOP', waiters, tonumber(ARGV[FIRST + 1])) or {}) do
    local job, index = split_address(address)
    put(job, index, value, ok == '1', true)
  end
end
local left = redis.call('LLEN', waiters)
if left == 0 then
  redis.call('DEL', entry, waiters)
  redis.call('LREM', C.handoff_key, 0, ARGV[FIRST])
end
return {{settle(), C.handoffs}, left}
""")

_ADVANCE = """
local entry = KEYS[1] .. ':' .. ARGV[1]
redis.call('LTRIM', entry .. ':waiters', tonumber(ARGV[2]), -1)
local left = redis.call('LLEN', entry .. ':waiters')
if left == 0 then
  redis.call('DEL', entry, entry .. ':waiters')
  redis.call('LREM', KEYS[1], 0, ARGV[1])
end
return left
"""


@dataclass(frozen=True)
class Handoff:
    number: str
    kind: str
    key: str
    input: bytes = b""


class Handoffs:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis = store.redis
        self._share_page = self.redis.register_script(_SHARE_PAGE)
        self._advance = self.redis.register_script(_ADVANCE)

    def pending(self, limit: int = 100) -> list[Handoff]:
        """The oldest unfinished handoffs; one whose entry is gone (finished meanwhile) is skipped."""
        numbers = [n.decode() for n in self.redis.lrange(keys.handoffs(), 0, limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.hmget(keys.handoff(number), "kind", "key", "input")
        found = []
        for number, (kind, key, input_json) in zip(numbers, pipe.execute()):
            if kind is None:
                self.redis.lrem(keys.handoffs(), 0, number)
            else:
                found.append(Handoff(number, kind.decode(), key.decode(), input_json or b""))
        return found

    def count(self) -> int:
        return self.redis.llen(keys.handoffs())

    def share(self, handoff: Handoff, page: int = 1000) -> int:
        """Serve the next ``page`` waiters of a ``share`` handoff; returns how many are left."""
        now = time.time()
        stored, left = self._share_page(keys=[], args=[*lua.head(self.store.bounds, now), handoff.number, page])
        self.store.landed(stored, now)
        return int(left)

    def waiters(self, handoffs: list[Handoff], count: int) -> list[list[tuple[str, int]]]:
        """The next ``count`` waiters of each ``release`` handoff, as (job id, index), still in the handoff;
        one round trip for all of them."""
        pipe = self.redis.pipeline(transaction=False)
        for handoff in handoffs:
            pipe.lrange(keys.handoff_waiters(handoff.number), 0, count - 1)
        return [[_address(w.decode()) for w in raw] for raw in pipe.execute()]

    def advance(self, done: list[tuple[Handoff, int]]) -> list[int]:
        """Drop each handoff's first waiters, now dealt with; a handoff goes with its last. Returns those left."""
        pipe = self.redis.pipeline(transaction=False)
        for handoff, count in done:
            self._advance(keys=[keys.handoffs()], args=[handoff.number, count], client=pipe)
        return [int(left) for left in pipe.execute()]


def _address(waiter: str) -> tuple[str, int]:
    job_id, _, index = waiter.rpartition("|")
    return job_id, int(index)
