"""Jobs watched for their end: something to do once a job has ended (call its webhook, write its result
files), kept durable in Redis by two sorted sets.

A job that asks for it is put in the *watch* set when it is created, in the same transaction. The write that
ends the job moves it to the *due* set: the storing scripts' ``settle`` (:mod:`batchery.store.lua`) when its
last item lands, :meth:`batchery.store.JobStore.cancel` and ``fail`` when it ends whole; so does whoever finds
it ended while looking through the watch set (a process may die between the two), and the move happens once
whoever makes it. A doer takes a due job by pushing its time forward by a lease, so that two never do it at
once and one that dies mid-way leaves it to another once the lease runs out; it then drops the job from the
due set, or sets the time of its next try.
"""

from __future__ import annotations

from typing import Any

import redis

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


class EndWatch:
    """One watch set and its due set."""

    def __init__(self, client: redis.Redis, watch_key: str, due_key: str) -> None:
        self.redis = client
        self.watch_key = watch_key
        self.due_key = due_key
        self._ended = client.register_script(_ENDED)
        self._claim = client.register_script(_CLAIM)

    def watch(self, pipe: Any, job_id: str, now: float) -> None:
        """Add to a job's creating transaction: the job has something to be done when it ends."""
        pipe.zadd(self.watch_key, {job_id: now + WATCH_S})

    def ended(self, job_id: str, now: float) -> bool:
        """The job has ended: it is due now. False when it is not watched, or was moved already."""
        return bool(self._ended(keys=[self.watch_key, self.due_key], args=[job_id, now]))

    def to_check(self, now: float, count: int) -> list[str]:
        """Watched jobs whose look is due, oldest first."""
        found = self.redis.zrangebyscore(self.watch_key, "-inf", now, start=0, num=count)
        return [job_id.decode() for job_id in found]

    def look_again(self, job_ids: list[str], at: float) -> None:
        """Watched jobs that have not ended: look at them again at ``at``."""
        if job_ids:
            self.redis.zadd(self.watch_key, {job_id: at for job_id in job_ids}, xx=True)

    def forget(self, job_ids: list[str]) -> None:
        """Watched jobs whose record is gone (expired): nothing to do about them."""
        if job_ids:
            self.redis.zrem(self.watch_key, *job_ids)

    def sort(self, statuses: dict[str, str | None], final: tuple[str, ...], now: float) -> None:
        """Watched jobs as a look found them (their status, None when gone): ended ones become due, gone ones
        are dropped, the rest are looked at again in :data:`WATCH_S`."""
        self.forget([j for j, status in statuses.items() if status is None])
        for job_id in [j for j, status in statuses.items() if status in final]:
            self.ended(job_id, now)
        self.look_again([j for j, status in statuses.items() if status not in (None, *final)], now + WATCH_S)

    def claim(self, now: float, lease_s: float, count: int) -> list[str]:
        """Up to ``count`` due jobs, each leased to the caller for ``lease_s``."""
        due = self._claim(keys=[self.due_key], args=[now, now + lease_s, count])
        return [job_id.decode() for job_id in due]

    def retry_at(self, job_id: str, at: float) -> None:
        """A due job taken but not done: due again at ``at`` (unless it was dropped meanwhile)."""
        self.redis.zadd(self.due_key, {job_id: at}, xx=True)

    def done(self, job_id: str) -> None:
        """A due job done with, or that needs nothing any more."""
        self.redis.zrem(self.due_key, job_id)

    def pending(self) -> tuple[int, int]:
        """Jobs watched, and jobs due: for tests and metrics."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.watch_key)
        pipe.zcard(self.due_key)
        watched, due = pipe.execute()
        return int(watched), int(due)
