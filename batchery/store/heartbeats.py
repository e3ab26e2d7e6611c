"""Worker heartbeats in Redis: the data the API, the metrics and the janitor read, and the workers write.

A worker is live while its key exists (it has a TTL, refreshed every beat), and *ready* (counted for its
models) while its value says so: a worker that is draining for shutdown, or whose batcher died, keeps beating
as not ready, so that nobody takes the chunks it still holds.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from batchery import keys


def publish(client: redis.Redis, hostname: str, info: dict[str, Any], ttl_s: float) -> None:
    """One beat: ``info`` (with ``hostname`` and ``ready``) for ``ttl_s`` seconds."""
    pipe = client.pipeline()
    pipe.set(keys.worker(hostname), json.dumps(info), px=int(ttl_s * 1000))
    pipe.sadd(keys.workers(), hostname)
    pipe.execute()


def withdraw(client: redis.Redis, hostname: str) -> None:
    """The worker is gone: readiness reflects it at once, not after the TTL."""
    pipe = client.pipeline()
    pipe.delete(keys.worker(hostname))
    pipe.srem(keys.workers(), hostname)
    pipe.execute()


def read_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired, ready or not; hostnames whose key is gone are pruned."""
    hostnames = sorted(h.decode() for h in client.smembers(keys.workers()))
    if not hostnames:
        return []
    values = client.mget([keys.worker(h) for h in hostnames])
    dead = [h for h, v in zip(hostnames, values) if v is None]
    if dead:
        client.srem(keys.workers(), *dead)
    return [json.loads(v) for v in values if v is not None]


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """The workers that are live and ready: what serves the models now."""
    return [w for w in read_workers(client) if w.get("ready", True)]


def is_alive(client: redis.Redis, hostname: str) -> bool:
    """Whether the worker's heartbeat key exists (ready or not)."""
    return bool(client.exists(keys.worker(hostname)))


def of_host(client: redis.Redis, host: str, name: str | None = None) -> dict[str, dict[str, Any]]:
    """The live heartbeats of the workers on ``host`` (Celery hostnames ``<name>@<host>``), or of the one named
    ``name`` there: hostname -> its beat. Read only: a probe that runs every few seconds writes nothing."""
    if name is not None:
        hostnames = [f"{name}@{host}"]
    else:
        hostnames = sorted(h for m in client.smembers(keys.workers()) if (h := m.decode()).endswith(f"@{host}"))
    values = client.mget([keys.worker(h) for h in hostnames]) if hostnames else []
    return {h: json.loads(v) for h, v in zip(hostnames, values) if v is not None}
