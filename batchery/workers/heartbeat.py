"""The heartbeat thread of a serving worker process: it refreshes the worker's key (:mod:`batchery.store.heartbeats`).

The API reads these to answer ``/readyz`` and ``GET /v1/models`` without a Celery broadcast round trip. A worker
writes its key only once its models are loaded and warm.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import redis

from batchery.store import heartbeats

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
        heartbeats.publish(self.client, self.hostname, {**self.info, "ready": self.ready()}, self.ttl_s)

    def stop(self) -> None:
        """Stop beating and withdraw the key, so that readiness reflects the exit at once."""
        self._stop.set()
        self._thread.join(self.interval_s * 2)
        try:
            heartbeats.withdraw(self.client, self.hostname)
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
