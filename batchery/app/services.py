"""What the API's request handlers share: settings, registry, job store and a Celery client.

Built once per Flask app by the factory and reached through :func:`services`, so handlers stay thin and
tests can build an app against their own Redis without touching globals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from flask import current_app

from batchery.app.follow import Waiters
from batchery.errors import NoLiveWorker
from batchery.models.registry import ModelSpec, Registry
from batchery.rollouts import Router, WeightStore
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.batches import BatchStore
from batchery.store.files import FileStore
from batchery.store.idempotency import IdempotencyKeys
from batchery.store.quotas import Quotas
from batchery.tasks.enqueue import Enqueuer
from batchery.store.heartbeats import live_workers

LIVE_WORKERS_CACHE_S = 1.0


@dataclass
class Services:
    settings: Settings
    registry: Registry
    store: JobStore
    celery: Celery
    enqueuer: Enqueuer
    idempotency: IdempotencyKeys
    quotas: Quotas
    files: FileStore
    batches: BatchStore
    weights: WeightStore
    router: Router
    waiters: Waiters
    _workers: tuple[float, list[dict[str, Any]]] = field(default=(0.0, []), repr=False)

    def live_workers(self, fresh: bool = False) -> list[dict[str, Any]]:
        """Live workers, read at most once a second: every submission checks them."""
        read_at, workers = self._workers
        if fresh or time.monotonic() - read_at > LIVE_WORKERS_CACHE_S:
            workers = live_workers(self.store.redis)
            self._workers = (time.monotonic(), workers)
        return workers

    def workers_for(self, spec: ModelSpec, fresh: bool = False) -> list[dict[str, Any]]:
        return [w for w in self.live_workers(fresh) if set(spec.queues) <= set(w.get("queues", []))]

    def unavailable(self, spec: ModelSpec) -> dict[str, str]:
        """Why the model failed to load, per live worker that tried: hostname -> reason."""
        workers = self.live_workers()
        return {w["hostname"]: w["unavailable"][spec.key] for w in workers if spec.key in w.get("unavailable", {})}

    def require_worker(self, spec: ModelSpec) -> None:
        """Refuse work no worker would take, unless workers are started on demand (an autoscaler that scales
        them to zero): then the work waits in Redis, counted in the model's backlog, which starts one."""
        if self.settings.accept_without_workers:
            return
        if not self.workers_for(spec) and not self.workers_for(spec, fresh=True):
            raise NoLiveWorker(f"no live worker serves model {spec.key!r}; start one with `batchery worker`")


def services() -> Services:
    return current_app.extensions["batchery"]
