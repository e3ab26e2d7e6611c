"""The worker bootstep that owns this process's :class:`ModelHost`.

It starts after the pool and before the consumer, so a worker loads and warms its models before it takes a
message, with its batch metrics hooked in and its own ``/metrics`` port open, and it announces the worker (its heartbeat) on ``worker_ready``, once the consumer is consuming. On a warm shutdown it stops after the consumer: batchers finish the items they hold, and a chunk that
had not reached its batcher yet is rejected back to the queue for another worker.
"""

from __future__ import annotations

import logging

from celery import bootsteps
from celery.signals import worker_ready

from batchery.batching import add_hook, remove_hook
from batchery.models.registry import load_registry
from batchery.monitoring.batch_metrics import BatchMetrics
from batchery.monitoring.exporter import WorkerExporter
from batchery.monitoring.metrics import record_job_finished
from batchery.settings import get_settings
from batchery.tasks.enqueue import Enqueuer
from batchery.workers.host import ModelHost, set_host

log = logging.getLogger(__name__)


class ModelHostStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs) -> None:  # noqa: ANN001 (Celery's signature)
        super().__init__(worker, **kwargs)
        self.host: ModelHost | None = None
        self.metrics: BatchMetrics | None = None
        self.exporter: WorkerExporter | None = None

    def start(self, worker) -> None:  # noqa: ANN001
        settings = get_settings()
        consumed = worker.app.amqp.queues.consume_from
        registry = load_registry(settings.models_file)
        specs = [s.on_device(settings.worker_device) for s in registry if consumed is None or s.queue in consumed]
        store = settings.job_store()
        store.on_release = Enqueuer(worker.app, store, settings, registry).release
        store.on_finish = record_job_finished
        self.metrics = add_hook(BatchMetrics())
        self.host = ModelHost(specs, settings, worker.hostname, store)
        self.exporter = WorkerExporter(self.host.batchers, settings.host, settings.worker_metrics_port).start()
        self.host.start()
        set_host(self.host)
        worker_ready.connect(self._announce, weak=False)
        log.info("worker %s serves %s on %s", worker.hostname, [s.ref for s in specs], self.host.describe()["device"])

    def _announce(self, sender=None, **kwargs) -> None:  # noqa: ANN001
        """The consumer is taking messages now: only then is the worker live."""
        if self.host is not None:
            self.host.announce()

    def stop(self, worker) -> None:  # noqa: ANN001
        if self.host is not None:
            self.host.stop()
        if self.exporter is not None:
            self.exporter.stop()
        if self.metrics is not None:
            remove_hook(self.metrics)
