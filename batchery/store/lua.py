"""The Lua that every script storing item results shares: one definition of "an item lands in its job".

Results reach jobs three ways: a worker's batch (the record script), a cache hit at submission (the claim
script) and an identical item's result handed to those that waited on it (the share script). Each is one
atomic call, and each builds on :data:`LIB`, so an item is counted, its job's shard expired and its job
completed the same way whichever way its result came.

Every script that includes :data:`LIB` starts its ``ARGV`` with :data:`HEAD` (see :func:`head`); its own
arguments follow from ``ARGV[#HEAD + 1]``. Keys are derived from ids inside the scripts (see
:mod:`batchery.keys`), which is why batchery needs one Redis, not a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from batchery import keys

#: The common arguments, in order.
HEAD = (
    "now", "job_prefix", "shard_items", "cache_prefix", "cache_ttl_s", "cache_max_per_shard",
    "cache_index_prefix", "handoff_key", "share_page", "keep_s", "backlog_prefix", "webhooks_watch",
    "webhooks_due", "results_watch", "results_due",
)

LIB = """
local C = {
  now = ARGV[1], job_prefix = ARGV[2], shard_items = tonumber(ARGV[3]), cache_prefix = ARGV[4],
  cache_ttl = tonumber(ARGV[5]), cache_max = tonumber(ARGV[6]), index_prefix = ARGV[7],
  handoff_key = ARGV[8], share_page = tonumber(ARGV[9]), keep = tonumber(ARGV[10]),
  backlog_prefix = ARGV[11], webhooks_watch = ARGV[12], webhooks_due = ARGV[13], results_watch = ARGV[14],
  results_due = ARGV[15], handoffs = 0,
}
local FIRST = 16
local jobs, order = {}, {}

local function shard_of(index) return math.floor(tonumber(index) / C.shard_items) end

local function job_state(job)
  local s = jobs[job]
  if s == nil then
    local key = C.job_prefix .. job
    local f = redis.call('HMGET', key, 'total', 'expires_at', 'model', 'tier', 'claims')
    if f[1] then
      s = {key = key, total = tonumber(f[1]), expires = math.floor(tonumber(f[2]) or 0), model = f[3] or '',
           tier = f[4] or 'standard', claims = f[5] ~= '0', ok = 0, err = 0, cached = 0, computed = 0,
           shards = {}}
    else
      s = false
    end
    jobs[job] = s
    order[#order + 1] = job
  end
  return s
end

-- Give a new shard key its job's end of life (once per shard: a TTL already set is left alone).
local function expire_with_job(s, key)
  if not s.shards[key] then
    s.shards[key] = true
    if s.expires > 0 and redis.call('TTL', key) < 0 then redis.call('EXPIREAT', key, s.expires) end
  end
end

-- The hash that holds a job's outputs for one shard of its indices.
local function out_key(s, shard) return s.key .. ':out:' .. shard end

-- Count one item newly stored in its job: an output or an error, from the cache or computed.
local function count(s, ok, cached)
  if ok then s.ok = s.ok + 1 else s.err = s.err + 1 end
  if cached then s.cached = s.cached + 1 else s.computed = s.computed + 1 end
end

-- Store one item's result unless it has one: true when this call stored it.
local function put(job, index, value, ok, cached)
  local s = job_state(job)
  if not s then return false end
  local key = out_key(s, shard_of(index))
  if redis.call('HSETNX', key, index, value) == 0 then return false end
  expire_with_job(s, key)
  count(s, ok, cached)
  return true
end

local function split_address(address)
  local bar = string.find(address, '|', 1, true)
  return string.sub(address, 1, bar - 1), string.sub(address, bar + 1)
end

-- A durable handoff: a waiter list too long to share in this call, or waiters to be computed anew.
local function handoff(kind, key, waiters, fields)
  local n = redis.call('INCR', C.handoff_key .. '-seq')
  local entry = C.handoff_key .. ':' .. n
  redis.call('RENAME', waiters, entry .. ':waiters')
  redis.call('HSET', entry, 'kind', kind, 'key', key, unpack(fields))
  redis.call('EXPIRE', entry, C.keep)
  redis.call('EXPIRE', entry .. ':waiters', C.keep)
  redis.call('RPUSH', C.handoff_key, n)
  C.handoffs = C.handoffs + 1
end

local function cache_put(key, value)
  redis.call('SET', C.cache_prefix .. key, value, 'EX', C.cache_ttl)
  local index = C.index_prefix .. string.sub(key, -1)
  redis.call('ZADD', index, C.now, key)
  if C.cache_max > 0 then
    local over = redis.call('ZCARD', index) - C.cache_max
    if over > 0 then
      local oldest = redis.call('ZPOPMIN', index, over)
      for j = 1, #oldest, 2 do redis.call('DEL', C.cache_prefix .. oldest[j]) end
    end
  end
end

-- Hand a result to the items that waited on it: at once up to a page of them, else through a handoff.
local function share(key, waiters, value, ok)
  local n = redis.call('LLEN', waiters)
  if n == 0 then return end
  if n > C.share_page then
    handoff('share', key, waiters, {'value', value, 'ok', ok and '1' or '0'})
    return
  end
  for _, address in ipairs(redis.call('LRANGE', waiters, 0, -1)) do
    local job, index = split_address(address)
    put(job, index, value, ok, true)
  end
  redis.call('DEL', waiters)
end

-- Count what landed into each job, complete the jobs whose last item it was, and say so:
-- {job, new ok, new errors, new cached, finished (0/1), model, status, created_at, tier} per job touched.
local function settle()
  local out = {}
  for _, job in ipairs(order) do
    local s = jobs[job]
    if not s then
      out[#out + 1] = {job, -1, -1, 0, 0, '', '', '', ''}
    else
      local row = {job, s.ok, s.err, s.cached, 0, s.model, '', '', s.tier}
      if s.ok + s.err > 0 then
        if s.computed > 0 and s.model ~= '' then
          local backlog = C.backlog_prefix .. s.model
          if redis.call('DECRBY', backlog, s.computed) < 0 then redis.call('SET', backlog, 0) end
        end
        local succeeded = redis.call('HINCRBY', s.key, 'succeeded', s.ok)
        local failed = redis.call('HINCRBY', s.key, 'failed', s.err)
        if s.cached > 0 then redis.call('HINCRBY', s.key, 'cached', s.cached) end
        if succeeded + failed >= s.total and succeeded + failed - s.ok - s.err < s.total then
          redis.call('HSET', s.key, 'finished_at', C.now)
          if redis.call('HGET', s.key, 'status') ~= 'cancelled' then redis.call('HSET', s.key, 'status', 'completed') end
          local done = s.key .. ':done'
          redis.call('RPUSH', done, '1')
          if s.expires > 0 then redis.call('EXPIREAT', done, s.expires) end
          local info = redis.call('HMGET', s.key, 'status', 'created_at')
          row[5], row[7], row[8] = 1, info[1], info[2]
          -- a watched job's webhook and result files are due now, in the write that ends it
          -- (see batchery.store.watches)
          if redis.call('ZREM', C.webhooks_watch, job) == 1 then redis.call('ZADD', C.webhooks_due, C.now, job) end
          if redis.call('ZREM', C.results_watch, job) == 1 then redis.call('ZADD', C.results_due, C.now, job) end
        end
      end
      out[#out + 1] = row
    end
  end
  return out
end
"""


@dataclass(frozen=True)
class Bounds:
    """The limits the scripts need: TTLs, the cache's size, how many waiters one call may serve."""

    job_ttl_s: int
    cache_ttl_s: int = 0
    cache_max_entries: int = 0
    #: Waiters served inside the call that stores their owner's result; more go through a handoff.
    share_page: int = 1000

    @property
    def cache_max_per_shard(self) -> int:
        if self.cache_max_entries <= 0:
            return 0
        return max(1, -(-self.cache_max_entries // keys.CACHE_INDEX_SHARDS))


def head(bounds: Bounds, now: float | None = None) -> list[Any]:
    """The :data:`HEAD` arguments, in order."""
    return [
        repr(time.time() if now is None else now), keys.job_prefix(), keys.SHARD_ITEMS, keys.cache_prefix(),
        bounds.cache_ttl_s, bounds.cache_max_per_shard, keys.cache_index_prefix(), keys.handoffs(),
        bounds.share_page, bounds.job_ttl_s, keys.backlog_prefix(), keys.webhooks_watch(), keys.webhooks_due(),
        keys.results_watch(), keys.results_due(),
    ]


def script(body: str) -> str:
    """A script's whole source: the library, then its own body."""
    return LIB + body
