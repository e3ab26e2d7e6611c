"""Serving the metrics: what one process counted, merged, plus the API's gauges read at scrape time.

The API may run as several gunicorn processes: a scrape reaches one of them, which merges what every process
counted (prometheus-client's multiprocess files, when ``PROMETHEUS_MULTIPROC_DIR`` is set) and adds the
gauges read at scrape time. A worker serves its own port (:mod:`batchery.monitoring.worker_exporter`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from batchery.monitoring.collectors import Backlogs, LiveWorkers, PoolSizes, QueueDepth

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from batchery.models.registry import Registry

log = logging.getLogger(__name__)


class ProcessMetrics:
    """This process's own registry (the metrics in :mod:`batchery.monitoring.metrics`, CPU and memory)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def registry_with(collectors: Sequence[Collector]) -> CollectorRegistry:
    """What one process counted, or all of gunicorn's processes in multiprocess mode, plus ``collectors``."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(ProcessMetrics())
    for collector in collectors:
        registry.register(collector)
    return registry


def scrape(collectors: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(registry_with(collectors)), CONTENT_TYPE_LATEST


def api_collectors(celery: "Celery", registry: "Registry", client: "redis.Redis") -> list[Collector]:
    """What the API reads at scrape time: each model queue's depth in the broker, its backlog and live workers,
    and the size of each machine's worker pool."""
    return [QueueDepth(celery, registry), Backlogs(client, registry), LiveWorkers(client, registry), PoolSizes(client)]
