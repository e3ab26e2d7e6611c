"""Leases: who writes a thing's files now, held for a while and renewed as they write.

A writer takes a lease (a string key holding its token, with a TTL), renews it as it goes, and makes what it
wrote count in one transaction that holds only while the lease is still its own (:func:`commit`). A writer
that dies lets its lease lapse and commits nothing; one that lost its lease to another (it stalled past the
TTL) commits nothing either, so two writers never both count. OpenAI batches' files and jobs' result files are
written under such leases.
"""

from __future__ import annotations

from typing import Callable

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._renew = client.register_script(_RENEW)

    def take(self, key: str, token: str, ttl_s: int) -> bool:
        """The lease at ``key`` for ``ttl_s`` unless renewed; False when someone else holds it."""
        return bool(self.redis.set(key, token, nx=True, ex=ttl_s))

    def renew(self, key: str, token: str, ttl_s: int) -> bool:
        """Another ``ttl_s``; False when the lease is no longer ``token``'s."""
        return bool(self._renew(keys=[key], args=[token, ttl_s]))

    def release(self, key: str, token: str) -> bool:
        """Let the lease go, if it is still ``token``'s, writing nothing."""
        return self.commit(key, token, lambda pipe: None)

    def commit(self, key: str, token: str, writes: Callable[[redis.client.Pipeline], None]) -> bool:
        """Queue ``writes`` and let the lease go, in one transaction, only while ``token`` holds it. False when
        the lease was lost (lapsed, or taken by another), and then nothing is written."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != token.encode():
                    return False
                pipe.multi()
                writes(pipe)
                pipe.delete(key)
                pipe.execute()
            except redis.WatchError:
                return False
        return True
