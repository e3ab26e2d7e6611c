"""Worker liveness in Redis: each serving worker process refreshes a key with a TTL.

The API reads these to answer ``/readyz`` and ``GET /v1/models`` without a Celery broadcast round trip:
a worker is live while its key exists, and it writes its key only once its models are loaded and warm.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis

from batchery import keys

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread that republishes ``info`` every ``interval_s`` with a TTL of ``ttl_s``."""

    def __init__(self, client: redis.Redis, hostname: str, info: dict[str, Any], interval_s: float, ttl_s: float) -> None:
        self.client = client
        self.hostname = hostname
        self.info = {**info, "hostname": hostname}
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        pipe = self.client.pipeline()
        pipe.set(keys.worker(self.hostname), json.dumps(self.info), px=self.ttl_ms)
        pipe.sadd(keys.workers(), self.hostname)
        pipe.execute()

    def stop(self) -> None:
        """Stop beating and withdraw the key, so that readiness reflects the exit at once."""
        self._stop.set()
        self._thread.join(self.interval_s * 2)
        try:
            self.client.delete(keys.worker(self.hostname))
            self.client.srem(keys.workers(), self.hostname)
        except redis.RedisError as exc:
            log.warning("could not withdraw heartbeat of %s: %s", self.hostname, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat of %s failed: %s", self.hostname, exc)


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired; hostnames whose key is gone are pruned."""
    hostnames = sorted(h.decode() for h in client.smembers(keys.workers()))
    if not hostnames:
        return []
    values = client.mget([keys.worker(h) for h in hostnames])
    dead = [h for h, v in zip(hostnames, values) if v is None]
    if dead:
        client.srem(keys.workers(), *dead)
    return [json.loads(v) for v in values if v is not None]
