"""An API key's quotas in Redis: items per minute, and items in flight (submitted, their job not ended).

Both are checked and counted in one script, so concurrent submissions of one key (from any number of API
processes) can never pass a limit together, and a submission refused by either counts in nothing.

Items per minute are counted per second in one hash per key: a submission is taken when the items of the
current second and the 59 before it, plus its own, stay within the limit. When they would not, the answer
says how many seconds until enough of the oldest seconds have left the window.

Items in flight are counted per job: the key's active jobs (job id -> items) and their sum. A job is counted
out when the API sees it end (a cancel, a predict that answered or timed out, a submission that failed), and
otherwise found ended by a sweep: each submission looks at the key's oldest few active jobs, and a
submission about to be refused looks at them all (at most once a second per key) before it is. A job whose
record is gone (expired, or its submission died before writing it) is counted out too, so the count cannot
drift for longer than a sweep; and every key here expires with the jobs it counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from batchery import keys
from batchery.store.jobs import FINAL_STATUSES

_COUNT_OUT = """
local function count_out(id)
  local items = redis.call('HGET', KEYS[3], id)
  if not items then return 0 end
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  if redis.call('DECRBY', KEYS[4], items) < 0 then redis.call('SET', KEYS[4], 0) end
  return tonumber(items)
end
"""

# KEYS: minute, active, items, in-flight, swept.
# ARGV: now, job id, items, items per minute (0: none), items in flight (0: none), job key prefix, TTL of the
# in-flight keys, seconds a job may go without a record, oldest jobs swept each time, ms between full sweeps,
# the window in seconds, then the final statuses.
# Returns {0, 0, 0} when taken, {1, items in the window, seconds to wait}, or {2, items in flight, 0}.
_ADMIT = _COUNT_OUT + """
local now, job, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local per_minute, in_flight = tonumber(ARGV[4]), tonumber(ARGV[5])
local window = tonumber(ARGV[11])
local second = math.floor(now)
local final = {}
for i = 12, #ARGV do final[ARGV[i]] = true end

local function ended(id)
  local status = redis.call('HGET', ARGV[6] .. id, 'status')
  if status then return final[status] == true end
  return tonumber(redis.call('ZSCORE', KEYS[2], id)) + tonumber(ARGV[8]) < now
end

local function sweep(count)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, count - 1)) do
    if ended(id) then count_out(id) end
  end
end

if per_minute > 0 then
  local used, seconds = 0, {}
  local raw = redis.call('HGETALL', KEYS[1])
  for i = 1, #raw, 2 do
    local s, items = tonumber(raw[i]), tonumber(raw[i + 1])
    if s <= second - window then
      redis.call('HDEL', KEYS[1], raw[i])
    else
      used = used + items
      seconds[#seconds + 1] = {s, items}
    end
  end
  if used + n > per_minute then
    table.sort(seconds, function(a, b) return a[1] < b[1] end)
    local excess = used + n - per_minute
    for _, entry in ipairs(seconds) do
      excess = excess - entry[2]
      if excess <= 0 then return {1, used, entry[1] + window - second} end
    end
    return {1, used, window}
  end
end

if in_flight > 0 then
  sweep(tonumber(ARGV[9]))
  local held = tonumber(redis.call('GET', KEYS[4]) or '0')
  if held + n > in_flight and redis.call('SET', KEYS[5], 1, 'NX', 'PX', ARGV[10]) then
    sweep(0)
    held = tonumber(redis.call('GET', KEYS[4]) or '0')
  end
  if held + n > in_flight then return {2, held, 0} end
end

if per_minute > 0 then
  redis.call('HINCRBY', KEYS[1], second, n)
  redis.call('EXPIRE', KEYS[1], window + 1)
end
if in_flight > 0 then
  redis.call('ZADD', KEYS[2], now, job)
  redis.call('HSET', KEYS[3], job, n)
  redis.call('INCRBY', KEYS[4], n)
  for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
end
return {0, 0, 0}
"""

# KEYS: minute, active, items, in-flight. ARGV: job id, the second it was counted in (or ''), its items.
_GIVE_BACK = _COUNT_OUT + """
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[1], ARGV[2], -tonumber(ARGV[3])) <= 0 then redis.call('HDEL', KEYS[1], ARGV[2]) end
end
return count_out(ARGV[1])
"""


@dataclass(frozen=True)
class Limits:
    """One key's limits; 0 is none."""

    items_per_minute: int = 0
    items_in_flight: int = 0

    def __bool__(self) -> bool:
        return bool(self.items_per_minute or self.items_in_flight)


@dataclass(frozen=True)
class Admission:
    """A submission counted in: what :meth:`Quotas.give_back` needs to count it out again."""

    name: str
    job_id: str
    items: int
    second: int | None


@dataclass(frozen=True)
class Refusal:
    """Which limit refused a submission, how much of it was used, and how long to wait (0: unknown)."""

    limit: str
    used: int
    retry_after_s: int


class Quotas:
    """Checks and counts API keys' quotas; safe to share between threads."""

    def __init__(self, client: redis.Redis, job_ttl_s: int) -> None:
        self.redis = client
        self.job_ttl_s = job_ttl_s
        self._admit = client.register_script(_ADMIT)
        self._give_back = client.register_script(_GIVE_BACK)

    def admit(
        self, name: str, job_id: str, items: int, limits: Limits, now: float | None = None
    ) -> Admission | Refusal:
        """Count a submission of ``items`` in, unless either limit would be passed."""
        now = time.time() if now is None else now
        args = [
            now, job_id, items, limits.items_per_minute, limits.items_in_flight, keys.job_prefix(),
            self.job_ttl_s + keys.QUOTA_PENDING_S, keys.QUOTA_PENDING_S, keys.QUOTA_SWEEP_OLDEST,
            keys.QUOTA_SWEEP_EVERY_MS, keys.QUOTA_WINDOW_S, *FINAL_STATUSES,
        ]
        refused, used, wait_s = self._admit(keys=self._keys(name, keys.tenant_swept(name)), args=args)
        if refused == 1:
            return Refusal("items_per_minute", int(used), int(wait_s))
        if refused == 2:
            return Refusal("items_in_flight", int(used), 0)
        return Admission(name, job_id, items, int(now) if limits.items_per_minute else None)

    def give_back(self, admission: Admission) -> None:
        """The submission failed: its items count neither against the minute nor in flight."""
        second = "" if admission.second is None else admission.second
        self._give_back(keys=self._keys(admission.name), args=[admission.job_id, second, admission.items])

    def count_out(self, name: str, job_id: str) -> int:
        """The job ended (cancelled, answered): its items are no longer in flight; returns how many were."""
        return int(self._give_back(keys=self._keys(name), args=[job_id, "", 0]))

    def in_flight(self, name: str) -> int:
        return int(self.redis.get(keys.tenant_in_flight(name)) or 0)

    @staticmethod
    def _keys(name: str, *more: str) -> list[str]:
        return [
            keys.tenant_minute(name), keys.tenant_active(name), keys.tenant_items(name), keys.tenant_in_flight(name),
            *more,
        ]
