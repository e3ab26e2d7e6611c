"""Worker pools' sizes in Redis: what each supervisor publishes every second and the API's metrics read.

A pool's supervisor has no ``/metrics`` port of its own; it publishes its size (processes serving, draining,
its bounds, how often it scaled) under its name with a short TTL, and the API reads every pool's at scrape
time, like the workers' heartbeats. A pool that dies stops refreshing its record and drops out of the scrape.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from batchery import keys


def publish(client: redis.Redis, name: str, record: dict[str, Any], ttl_s: float = keys.POOL_TTL_S) -> None:
    pipe = client.pipeline()
    pipe.set(keys.pool(name), json.dumps({"pool": name, **record}), px=int(ttl_s * 1000))
    pipe.sadd(keys.pools(), name)
    pipe.execute()


def withdraw(client: redis.Redis, name: str) -> None:
    """The pool stopped: its size leaves the scrape at once, not after the TTL."""
    pipe = client.pipeline()
    pipe.delete(keys.pool(name))
    pipe.srem(keys.pools(), name)
    pipe.execute()


def read_pools(client: redis.Redis) -> list[dict[str, Any]]:
    """Every pool whose record has not expired; names whose key is gone are pruned."""
    names = sorted(n.decode() for n in client.smembers(keys.pools()))
    if not names:
        return []
    values = client.mget([keys.pool(n) for n in names])
    gone = [n for n, v in zip(names, values) if v is None]
    if gone:
        client.srem(keys.pools(), *gone)
    return [json.loads(v) for v in values if v is not None]
