"""Completion webhooks in Redis: which jobs have one, which are due a call, and how each call went.

A job that names a webhook is put in the *watch* set when it is created, in the same transaction. The write
that ends the job moves it to the *due* set: the storing scripts' ``settle`` (:mod:`batchery.store.lua`) when
its last item lands, :meth:`Webhooks.ended` when it is cancelled or failed whole; so does whoever finds it ended while
looking through the watch set (a process may die between the two), and the move happens once whoever makes
it. A sender takes a due job by pushing its time forward by a lease, so that two senders never call at once
and a sender that dies mid-call leaves it to another once the lease runs out; it then records the attempt
in the job's own record (``webhook_attempts``, ``webhook_status``, ``webhook_at``, ``webhook_state``) and
either drops the job from the due set or sets the time of its next try. This module only stores: the calls
are made by :mod:`batchery.webhooks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from batchery import keys

#: How long after its creation, and then how often, a watched job is looked at in case its end was missed.
WATCH_S = 10.0

_ENDED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) return 1 end
return 0
"""

# KEYS: due. ARGV: now, lease until, count. Takes up to count due jobs, each leased until ARGV[2].
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], job) end
return due
"""

# KEYS: job, due. ARGV: job id, attempts, status, at, state, retry at ('' when done with it).
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'webhook_attempts', ARGV[2], 'webhook_status', ARGV[3], 'webhook_at', ARGV[4],
             'webhook_state', ARGV[5])
end
if ARGV[6] == '' or redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1]) end
"""


@dataclass(frozen=True)
class Attempt:
    """One call of a job's webhook: its number (from 1), what came back (an HTTP status, or why none did)."""

    number: int
    status: str
    at: float
    delivered: bool


class Webhooks:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._ended = client.register_script(_ENDED)
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def watch(pipe: Any, job_id: str, now: float) -> None:
        """Add to a job's creating transaction: the job has a webhook to call when it ends."""
        pipe.zadd(keys.webhooks_watch(), {job_id: now + WATCH_S})

    def ended(self, job_id: str, now: float) -> bool:
        """The job has ended: its webhook is due now. False when it has none, or was moved already."""
        return bool(self._ended(keys=[keys.webhooks_watch(), keys.webhooks_due()], args=[job_id, now]))

    def to_check(self, now: float, count: int) -> list[str]:
        """Watched jobs whose look is due, oldest first."""
        found = self.redis.zrangebyscore(keys.webhooks_watch(), "-inf", now, start=0, num=count)
        return [job_id.decode() for job_id in found]

    def look_again(self, job_ids: list[str], at: float) -> None:
        """Watched jobs that have not ended: look at them again at ``at``."""
        if job_ids:
            self.redis.zadd(keys.webhooks_watch(), {job_id: at for job_id in job_ids}, xx=True)

    def forget(self, job_ids: list[str]) -> None:
        """Watched jobs whose record is gone (expired): nothing to call about."""
        if job_ids:
            self.redis.zrem(keys.webhooks_watch(), *job_ids)

    def claim(self, now: float, lease_s: float, count: int) -> list[str]:
        """Up to ``count`` due jobs, each leased to the caller for ``lease_s``."""
        due = self._claim(keys=[keys.webhooks_due()], args=[now, now + lease_s, count])
        return [job_id.decode() for job_id in due]

    def record(self, job_id: str, attempt: Attempt, retry_at: float | None, state: str) -> None:
        """Write the attempt into the job's record; call again at ``retry_at``, or (None) never again."""
        args = [job_id, attempt.number, attempt.status, repr(attempt.at), state, "" if retry_at is None else repr(retry_at)]
        self._record(keys=[keys.job(job_id), keys.webhooks_due()], args=args)

    def pending(self) -> tuple[int, int]:
        """Jobs watched, and jobs due a call: for tests and metrics."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.webhooks_watch())
        pipe.zcard(keys.webhooks_due())
        watched, due = pipe.execute()
        return int(watched), int(due)
