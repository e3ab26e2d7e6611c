"""OpenAI-style batches in Redis: one record per batch, beside the ordinary job that runs its items.

The record holds what the job does not: the batch's input file, its line errors, its output and error files
and its OpenAI status. The files are written by whoever holds the batch's finalizing lease, and made the
batch's in one transaction that holds only while the lease is still the writer's (:meth:`BatchStore.commit`): a
writer that died, or lost its lease to another, commits nothing, and the next one starts over.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import orjson
import redis

from batchery import keys
from batchery.store.leases import Leases
from batchery.store.listing import page

#: Record fields kept as integers (Unix seconds, counts); the rest are strings, and these two are JSON.
INTEGERS = (
    "created_at",
    "expires_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "requests",
    "items",
    "error_lines",
    "completed",
    "failed",
)
JSON_FIELDS = ("metadata", "errors")

FINAL = ("completed", "failed", "expired", "cancelled")
_UPDATE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'expired' or status == 'cancelled' then
  return 0
end
for i = 1, #ARGV, 3 do
  if ARGV[i + 2] == '1' then redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


class BatchStore:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.leases = Leases(client)
        self._update = client.register_script(_UPDATE)

    def create(self, batch_id: str, fields: dict[str, Any]) -> None:
        """A new record, listed among its owner's batches (and everyone's); it lives the job TTL. Listed by the
        time it is made, to the microsecond: ``created_at`` is in whole seconds, as OpenAI gives it."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(keys.batch(batch_id), mapping=_encode({**fields, "id": batch_id}))
        pipe.expire(keys.batch(batch_id), self.ttl_s)
        pipe.zadd(keys.batches(), {batch_id: now})
        if fields.get("owner"):
            pipe.zadd(keys.tenant_batches(fields["owner"]), {batch_id: now})
            pipe.expire(keys.tenant_batches(fields["owner"]), self.ttl_s)
        pipe.execute()

    def get(self, batch_id: str) -> dict[str, Any] | None:
        return _decode(self.redis.hgetall(keys.batch(batch_id)))

    def update(self, batch_id: str, fields: dict[str, Any], only_if_new: tuple[str, ...] = ()) -> bool:
        """Set ``fields`` of a batch that has not ended, in one step; those named in ``only_if_new`` only where the
        record has none yet (a timestamp that two processes may both set). A batch that ended (its files
        committed, or failed) is left as it is: a look that read it before it ended cannot undo that. False then."""
        args: list[Any] = []
        for name, value in _encode(fields).items():
            args += [name, value, 1 if name in only_if_new else 0]
        return bool(self._update(keys=[keys.batch(batch_id)], args=args))

    def list(self, owner: str | None, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of the batches of ``owner`` (of everyone with None), newest first; ids whose record expired
        are dropped from the list as they are met."""
        key = keys.batches() if owner is None else keys.tenant_batches(owner)
        ids, more = page(self.redis, key, after, limit)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(keys.batch(batch_id))
        found = [_decode(raw) for raw in pipe.execute()]
        gone = [batch_id for batch_id, batch in zip(ids, found) if batch is None]
        if gone:
            self.redis.zrem(key, *gone)
        return [b for b in found if b is not None], more

    def take_lease(self, batch_id: str, token: str) -> bool:
        """The right to write the batch's files, for :data:`keys.FINALIZE_LEASE_S` unless renewed."""
        return self.leases.take(keys.batch_finalizing(batch_id), token, keys.FINALIZE_LEASE_S)

    def renew_lease(self, batch_id: str, token: str) -> bool:
        return self.leases.renew(keys.batch_finalizing(batch_id), token, keys.FINALIZE_LEASE_S)

    def commit(
        self,
        batch_id: str,
        token: str,
        fields: dict[str, Any],
        also: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> bool:
        """Set ``fields`` (and whatever ``also`` adds: the files' records) in one transaction, only while
        ``token`` still holds the lease; the lease is let go with it. False when the lease was lost."""

        def writes(pipe: redis.client.Pipeline) -> None:
            pipe.hset(keys.batch(batch_id), mapping=_encode(fields))
            if also is not None:
                also(pipe)

        return self.leases.commit(keys.batch_finalizing(batch_id), token, writes)


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in fields.items():
        if value is None:
            continue
        out[name] = orjson.dumps(value) if name in JSON_FIELDS else value
    return out


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not raw:
        return None
    found: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for name in INTEGERS:
        found[name] = int(float(found[name])) if name in found else None
    for name in JSON_FIELDS:
        found[name] = orjson.loads(found[name]) if name in found else None
    found["owner"] = found.get("owner") or None
    return found


def now_s() -> int:
    return int(time.time())
