"""Serving the metrics: the API's ``/metrics`` and each worker process's own exporter port.

The API may run as several gunicorn processes: a scrape reaches one of them, which merges what every process
counted (prometheus-client's multiprocess files, when ``PROMETHEUS_MULTIPROC_DIR`` is set) and adds the
gauges read at scrape time. A worker is a single process (the threads pool), so it serves its own registry
on ``worker_metrics_port`` and Prometheus sums the workers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from batchery.monitoring.collectors import BatcherQueues, LiveWorkers, QueueDepth
from batchery.monitoring.nvml import GpuCollector

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from batchery.batching import Batcher
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
    """What the API reads at scrape time: each model queue's depth in the broker and its live workers."""
    return [QueueDepth(celery, registry), LiveWorkers(client, registry)]


def worker_collectors(batchers: Mapping[str, "Batcher"]) -> list[Collector]:
    """What a worker reads at scrape time: its batchers' waiting items and its GPUs."""
    return [BatcherQueues(batchers), GpuCollector()]


class WorkerExporter:
    """A worker process's ``/metrics`` on its own port: its counts, its batchers' queues and its GPUs.

    A port that is taken is logged and skipped, never fatal: metrics must not keep a worker from serving.
    """

    def __init__(self, batchers: Mapping[str, "Batcher"], host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessMetrics(), *worker_collectors(batchers)):
            self.registry.register(collector)
        self.host = host
        self.port = port
        self._server = None

    def start(self) -> "WorkerExporter":
        if self.port:
            try:
                self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
                log.info("worker metrics on http://%s:%d/metrics", self.host, self.port)
            except OSError as exc:
                log.warning("worker metrics off: cannot listen on %s:%d: %s", self.host, self.port, exc)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
