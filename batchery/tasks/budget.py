"""How many chunks a lane (a model's queue for one tier) may have in flight: sent and not yet done.

A few per live worker that serves the queue (``BATCHERY_CHUNKS_IN_FLIGHT_PER_WORKER``, 2 by default): enough
that each worker has its next chunk at hand when one finishes, and no more, so that the rest of a big job waits
in Redis, where the lane's round-robin can still put a later job's chunk next. The interactive tier has no
budget: a predict's chunk goes at once.
"""

from __future__ import annotations

import time

import redis

from batchery.store.chunks import UNBOUNDED
from batchery.tiers import INTERACTIVE
from batchery.store.heartbeats import live_workers

#: Live workers are read at most this often: every submission and every finished chunk asks.
WORKERS_CACHE_S = 1.0


class LaneBudget:
    def __init__(self, client: redis.Redis, per_worker: int) -> None:
        self.redis = client
        self.per_worker = per_worker
        self._read_at = 0.0
        self._queues: list[list[str]] = []

    def __call__(self, queue: str) -> int:
        if queue.endswith("." + INTERACTIVE):
            return UNBOUNDED
        serving = sum(queue in queues for queues in self._workers())
        return self.per_worker * max(1, serving)

    def _workers(self) -> list[list[str]]:
        if time.monotonic() - self._read_at > WORKERS_CACHE_S:
            try:
                self._queues = [w.get("queues", []) for w in live_workers(self.redis)]
            except redis.RedisError:
                pass  # the last reading will do; the store's own call will say if Redis is down
            self._read_at = time.monotonic()
        return self._queues
