"""A worker process's own ``/metrics`` port: its counts, its batchers' queues and its GPUs (through NVML).

A worker is a single process (the threads pool), so it serves its own registry on ``worker_metrics_port`` and
Prometheus sums the workers. Kept apart from :mod:`batchery.monitoring.exporter`, so that the API never loads
NVML or the batcher.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from batchery.monitoring.collectors import BatcherQueues
from batchery.monitoring.exporter import ProcessMetrics
from batchery.monitoring.nvml import GpuCollector

if TYPE_CHECKING:
    from batchery.batching import Batcher

log = logging.getLogger(__name__)


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
