"""Worker liveness in Redis: each serving worker process refreshes a key with a TTL.

The API reads these to answer ``/readyz`` and ``GET /v1/models`` without a Celery broadcast round trip:
a worker is live while its key exists, and it writes its key only once its models are loaded and warm.
A live worker is *ready* (counted for its models) while it is healthy and not draining; one that is draining
or whose batcher died keeps its key, marked not ready, so that nobody takes the chunks it still holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import redis

from batchery import keys

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread that republishes ``info`` every ``interval_s`` with a TTL of ``ttl_s``.

    ``ready`` is read at every beat. :attr:`steady_since` is when the beats last started succeeding without a
    gap (monotonic): a process that could not reach Redis for a while cannot tell live peers from dead ones
    until they have had time to beat again.
    """

    def __init__(
        self, client: redis.Redis, hostname: str, info: dict[str, Any], interval_s: float, ttl_s: float,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client = client
        self.hostname = hostname
        self.info = {**info, "hostname": hostname}
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.ready = ready
        self.steady_since = time.monotonic()
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        pipe = self.client.pipeline()
        pipe.set(keys.worker(self.hostname), json.dumps({**self.info, "ready": self.ready()}), px=int(self.ttl_s * 1000))
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
                self._failing = True
                log.warning("heartbeat of %s failed: %s", self.hostname, exc)
                continue
            if self._failing:
                self._failing = False
                self.steady_since = time.monotonic()

    def steady_for(self) -> float:
        """Seconds since the beats last resumed after a failure (or started)."""
        return 0.0 if self._failing else time.monotonic() - self.steady_since


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
