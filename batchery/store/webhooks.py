"""Completion webhooks in Redis: which jobs have one, which are due a call, and how each call went.

A job that names a webhook is watched for its end (:mod:`batchery.store.watches`: the write that ends it makes
its webhook due). A sender takes a due job under a lease, so that two senders never call at once and a sender
that dies mid-call leaves it to another once the lease runs out; it then records the attempt in the job's own
record (``webhook_attempts``, ``webhook_status``, ``webhook_at``, ``webhook_state``) and either drops the job
from the due set or sets the time of its next try. This module only stores: the calls are made by
:mod:`batchery.webhooks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from batchery import keys
from batchery.store.watches import WATCH_S, EndWatch

__all__ = ["WATCH_S", "Attempt", "Webhooks"]

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


class Webhooks(EndWatch):
    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, keys.webhooks_watch(), keys.webhooks_due())
        self._record = client.register_script(_RECORD)

    def record(self, job_id: str, attempt: Attempt, retry_at: float | None, state: str) -> None:
        """Write the attempt into the job's record; call again at ``retry_at``, or (None) never again."""
        args = [job_id, attempt.number, attempt.status, repr(attempt.at), state, "" if retry_at is None else repr(retry_at)]
        self._record(keys=[keys.job(job_id), self.due_key], args=args)
