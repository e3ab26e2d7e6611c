"""Claiming a job's items at submission: each is served from the cache, computed here, or shared.

One Lua call per page of items decides, atomically per item, between three outcomes:

- **hit**: the cache holds the output; the script writes it into the job itself (it never leaves Redis, and
  the job completes in that call if that was its last item), and the item never reaches a worker;
- **own**: nobody is computing this input; the job claims it (an in-flight key naming this job and index,
  holding the input) and sends it to a worker;
- **wait**: another item (of this job or another) is computing it; this item's address joins the waiters,
  and the owner's record script hands the output to every waiter when it lands (see :mod:`batchery.store.jobs`).

An item that finds the claim held by itself is **again** its owner rather than a waiter on itself: a
resubmission of waiters (:meth:`batchery.tasks.enqueue.Enqueuer.resubmit`) is redone whenever its first run did
not finish, and a first run that died between claiming and sending would otherwise leave the item waiting for
ever on a computation nobody sent. It is sent again (stored once, however often it is computed), but not
counted into the model's backlog again: the first run counted it if it sent it.

A claim that will not be computed after all (its job could not be sent, was cancelled, failed part-way) is
*abandoned*: the in-flight key goes, and items that joined it as waiters are handed off to be computed anew
(:mod:`batchery.store.handoff`), so that no item ever waits on a computation that will not happen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson

from batchery import keys
from batchery.cache.digest import keyed
from batchery.models.precision import cache_ref
from batchery.models.registry import ModelSpec
from batchery.store import JobStore, lua

#: Items per claim call (3 arguments each), and calls per round trip: no call nears Redis's argument or
#: query-buffer limits, however large the job.
PAGE = 1000
CALLS_PER_TRIP = 16

_CLAIM = lua.script("""
-- ARGV after the head: job, '1' to pass over items that already have a result (a resubmission), then
-- (index, cache key, input JSON) per item.
local job, skip_done = ARGV[FIRST], ARGV[FIRST + 1] == '1'
local owned, hits, waits, again = {}, 0, 0, {}
local s_done = skip_done and job_state(job)
for i = FIRST + 2, #ARGV, 3 do
  local index, key, input = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local entry = C.cache_prefix .. key
  -- an item stored since the caller looked is passed over: a claim now would be resolved by no one, since a
  -- record resolves only the claims of the items it stores
  local done = s_done and redis.call('HEXISTS', out_key(s_done, shard_of(index)), index) == 1
  local value = not done and redis.call('GET', entry)
  local me = job .. '|' .. index
  if done then -- neither claimed nor sent
  elseif value then
    put(job, index, value, true, true)
    hits = hits + 1
  elseif redis.call('SET', entry .. ':inflight', me .. '\\n' .. input, 'NX', 'EX', C.keep) then
    local s = job_state(job)
    if s then
      local owns = s.key .. ':owns:' .. shard_of(index)
      redis.call('HSET', owns, index, key)
      expire_with_job(s, owns)
    end
    owned[#owned + 1] = index
  elseif string.sub(redis.call('GET', entry .. ':inflight'), 1, #me + 1) == me .. '\\n' then
    -- this very item holds the claim: a resubmission redone, whose first run may have died before it sent it
    again[#again + 1] = index
  else
    redis.call('RPUSH', entry .. ':waiters', me)
    redis.call('EXPIRE', entry .. ':waiters', C.keep)
    waits = waits + 1
  end
end
return {{settle(), C.handoffs}, owned, hits, waits, again}
""")

_ABANDON = lua.script("""
-- ARGV after the head: job, then 'shards' and the shard numbers of its claims to drop (every claim in them),
-- or 'items' and the indices whose claims to drop.
local job = ARGV[FIRST]
local dropped = 0
local function drop(owns, index, key)
  local entry = C.cache_prefix .. key
  local inflight = redis.call('GET', entry .. ':inflight')
  local me = job .. '|' .. index .. '\\n'
  if inflight and string.sub(inflight, 1, #me) == me then
    redis.call('DEL', entry .. ':inflight')
    dropped = dropped + 1
    if redis.call('LLEN', entry .. ':waiters') > 0 then
      handoff('release', key, entry .. ':waiters', {'input', string.sub(inflight, #me + 1)})
    end
  end
end
for i = FIRST + 2, #ARGV do
  if ARGV[FIRST + 1] == 'shards' then
    local owns = C.job_prefix .. job .. ':owns:' .. ARGV[i]
    local pairs_ = redis.call('HGETALL', owns)
    for j = 1, #pairs_, 2 do drop(owns, pairs_[j], pairs_[j + 1]) end
    redis.call('DEL', owns)
  else
    local owns = C.job_prefix .. job .. ':owns:' .. shard_of(ARGV[i])
    local key = redis.call('HGET', owns, ARGV[i])
    if key then
      drop(owns, ARGV[i], key)
      redis.call('HDEL', owns, ARGV[i])
    end
  end
end
return {{settle(), C.handoffs}, dropped}
""")


@dataclass
class Claim:
    """The outcome for one job's items: the indices to compute (``owned`` newly claimed, ``again`` claimed by
    the same items before), how many were hits and how many wait."""

    owned: list[int] = field(default_factory=list)
    hits: int = 0
    waiting: int = 0
    again: list[int] = field(default_factory=list)


class ResultCache:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._claim = store.redis.register_script(_CLAIM)
        self._abandon = store.redis.register_script(_ABANDON)

    def claim(
        self, job_id: str, spec: ModelSpec, inputs: Sequence[Any], indices: Sequence[int] | None = None,
        *, skip_done: bool = False,
    ) -> Claim:
        """Claim items ``indices`` (default: all) of a job whose inputs are ``inputs`` (same order as indices).

        ``skip_done`` passes over items that have a result by the time the claim runs, in the same atomic step:
        a resubmission's items may be stored between the caller's look and its claim, and a claim taken for one
        of them would stay in Redis, with its backlog, for nobody to resolve. Pages run in order, a few per
        round trip; one that fails leaves the earlier pages' claims in place, for the caller to :meth:`abandon`.
        """
        indices = range(len(inputs)) if indices is None else indices
        ref = cache_ref(spec)
        claim = Claim()
        pages = range(0, len(inputs), PAGE)
        for trip in range(0, len(pages), CALLS_PER_TRIP):
            now = time.time()
            pipe = self.store.redis.pipeline(transaction=False)
            for start in pages[trip : trip + CALLS_PER_TRIP]:
                args: list[Any] = [*lua.head(self.store.bounds, now), job_id, "1" if skip_done else "0"]
                for index, value in zip(indices[start : start + PAGE], inputs[start : start + PAGE]):
                    args.extend((index, keyed(ref, value), orjson.dumps(value)))
                self._claim(keys=[], args=args, client=pipe)
            for stored, owned, hits, waits, again in pipe.execute():
                self.store.landed(stored, now)
                claim.owned += [int(i) for i in owned]
                claim.hits += int(hits)
                claim.waiting += int(waits)
                claim.again += [int(i) for i in again]
        return claim

    def abandon(self, job_id: str, total: int) -> int:
        """Drop every claim the job still holds; items that waited on them are handed off to be computed anew.

        Returns how many claims were dropped. Safe to repeat, and safe against a claim taken afresh by
        another item since: only an in-flight key that names this job and index is dropped.
        """
        return self._drop(job_id, "shards", list(range(math.ceil(total / keys.SHARD_ITEMS))), 100)

    def abandon_items(self, job_id: str, indices: Sequence[int]) -> int:
        """Drop the claims of the job's items at ``indices`` only (a resubmission that could not be sent)."""
        return self._drop(job_id, "items", list(indices), PAGE)

    def _drop(self, job_id: str, mode: str, targets: list[int], page: int) -> int:
        dropped = 0
        for start in range(0, len(targets), page):
            now = time.time()
            args = [*lua.head(self.store.bounds, now), job_id, mode, *targets[start : start + page]]
            stored, count = self._abandon(keys=[], args=args)
            self.store.landed(stored, now)
            dropped += int(count)
        return dropped
