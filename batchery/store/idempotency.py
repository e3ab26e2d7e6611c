"""Idempotency keys: a client's ``Idempotency-Key`` names the one job its submission created.

A key is held briefly while its job is being accepted, bound to the job for the job's lifetime once it is,
and let go if the submission fails (a 429, a 503, anything): a retry with the same key, which is what the key
is for, then submits afresh instead of meeting a job that never was. A submitting process that dies leaves
only the brief hold, which expires.

With API keys on, a key is scoped to the API key's name: two API keys may use the same ``Idempotency-Key``
independently, and neither can reach the other's job through it.
"""

from __future__ import annotations

import redis

from batchery import keys

_LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_BIND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class IdempotencyKeys:
    def __init__(self, client: redis.Redis, job_ttl_s: int) -> None:
        self.redis = client
        self.job_ttl_s = job_ttl_s
        self._let_go = client.register_script(_LET_GO)
        self._bind = client.register_script(_BIND)

    def hold(self, client_key: str, job_id: str, scope: str = "") -> str:
        """The job id that owns ``client_key``: ``job_id`` if this call took it, else the earlier holder's."""
        key = keys.idempotency(client_key, scope)
        if self.redis.set(key, job_id, nx=True, ex=keys.IDEMPOTENCY_PENDING_S):
            return job_id
        owner = self.redis.get(key)
        return owner.decode() if owner is not None else self.hold(client_key, job_id, scope)

    def bind(self, client_key: str, job_id: str, scope: str = "") -> None:
        """The job was accepted: the key answers with it for as long as the job lives."""
        self._bind(keys=[keys.idempotency(client_key, scope)], args=[job_id, self.job_ttl_s])

    def let_go(self, client_key: str, job_id: str, scope: str = "") -> None:
        """The submission failed: the key is free for a retry."""
        self._let_go(keys=[keys.idempotency(client_key, scope)], args=[job_id])
