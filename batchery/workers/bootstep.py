"""The worker bootstep that owns this process's :class:`ModelHost` and its janitor.

It starts after the pool and before the consumer, so a worker loads and warms its models before it takes a
message, with its batch metrics hooked in and its own ``/metrics`` port open. A model that fails to load is
left out: its queue is not consumed here, and the heartbeat says why. Before consuming, the worker also puts
back to work any chunk an earlier process of the same name died holding. It announces the worker (its
heartbeat) on ``worker_ready``, once the consumer is consuming, and starts its janitor, its canary watcher
(:mod:`batchery.rollouts.watcher`), its writer of jobs' result files and, with a ``BATCHERY_WEBHOOK_SECRET``, its
webhook sender. A worker whose batcher dies asks Celery for a warm shutdown with a failing exit code, so that its
supervisor starts it again. On a warm shutdown it stops after the consumer: batchers finish the items they hold,
within one drain deadline, and a chunk that had not
reached its batcher yet is handed back to the queue for another worker.
"""

from __future__ import annotations

import logging
import socket
import time

from celery import bootsteps
from celery.platforms import EX_FAILURE
from celery.signals import worker_ready
from celery.worker import state

from batchery import tracing
from batchery.batching import BatchHook, add_hook, remove_hook
from batchery.models.registry import load_registry
from batchery.monitoring.batch_metrics import BatchMetrics
from batchery.monitoring.worker_exporter import WorkerExporter
from batchery.monitoring.metrics import record_job_finished
from batchery.recovery import Janitor
from batchery.rollouts import CanaryWatcher, WeightStore
from batchery.results.writer import ResultWriter
from batchery.settings import Settings, get_settings
from batchery.store.files import Blobs, FileStore
from batchery.tasks.enqueue import Enqueuer
from batchery.webhooks.sender import WebhookSender
from batchery.workers.host import ModelHost, set_host

log = logging.getLogger(__name__)


class ModelHostStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs) -> None:  # noqa: ANN001 (Celery's signature)
        super().__init__(worker, **kwargs)
        self.host: ModelHost | None = None
        self.metrics: BatchMetrics | None = None
        self.exporter: WorkerExporter | None = None
        self.janitor: Janitor | None = None
        self.webhooks: WebhookSender | None = None
        self.canaries: CanaryWatcher | None = None
        self.results: ResultWriter | None = None
        self.trace_hook: BatchHook | None = None

    def start(self, worker) -> None:  # noqa: ANN001
        settings = get_settings()
        queues = worker.app.amqp.queues
        consumed = queues.consume_from
        registry = load_registry(settings.models_file)
        specs = [
            s.on_device(settings.worker_device) for s in registry if consumed is None or set(s.queues) & set(consumed)
        ]
        store = settings.job_store()
        store.on_finish = record_job_finished
        self.metrics = add_hook(BatchMetrics())
        self._trace(settings, worker.hostname)
        self.host = ModelHost(specs, settings, worker.hostname, store)
        self.host.on_unhealthy = self._unhealthy
        self.exporter = WorkerExporter(self.host.batchers, settings.host, settings.worker_metrics_port).start()
        self.host.start()
        for name in self.host.unavailable:
            queues.deselect(list(registry.get(name).queues))
        set_host(self.host)
        enqueuer = Enqueuer(worker.app, store, settings, registry)
        self.host.budget = enqueuer.dispatcher.budget
        self.host.on_release = enqueuer.dispatcher.publish_all
        self.janitor = Janitor(enqueuer, settings, worker.hostname, lambda: self.host.heartbeat)
        store.on_handoff = self.janitor.wake
        self.janitor.recover_host(worker.hostname)
        if settings.webhook_secret:
            self.webhooks = WebhookSender(store, settings)
        weights = WeightStore(store.redis, registry, settings.models_file)
        self.canaries = CanaryWatcher(store.redis, registry, weights, settings)
        files = FileStore(store.redis, Blobs(settings.effective_files_url), settings.file_ttl_s)
        self.results = ResultWriter(store, files, settings)
        worker_ready.connect(self._announce, weak=False)
        log.info("worker %s serves %s on %s", worker.hostname, [s.ref for s in self.host.served], self.host.describe()["device"])

    def _trace(self, settings: Settings, hostname: str) -> None:
        """Tracing, when OpenTelemetry's environment asks for it: the provider, and the hook that makes batch spans."""
        process = {"batchery.worker": hostname, "host.name": socket.gethostname()}
        if tracing.configure(settings, "batchery-worker", process):
            from batchery.tracing.batches import TraceHook

            self.trace_hook = add_hook(TraceHook(tracing.tracer()))

    def _announce(self, sender=None, **kwargs) -> None:  # noqa: ANN001
        """The consumer is taking messages now: only then is the worker live."""
        if self.host is not None:
            self.host.announce()
        if self.janitor is not None:
            self.janitor.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.canaries is not None:
            self.canaries.start()
        if self.results is not None:
            self.results.start()

    def _unhealthy(self, why: str) -> None:
        """Celery's own warm shutdown, as a signal would ask for it, but with a failing exit code."""
        log.error("worker is unhealthy (%s): shutting down to be restarted", why)
        state.should_stop = EX_FAILURE

    def stop(self, worker) -> None:  # noqa: ANN001
        deadline = time.monotonic() + get_settings().worker_drain_timeout_s
        if self.janitor is not None:
            self.janitor.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.canaries is not None:
            self.canaries.stop()
        if self.results is not None:
            self.results.stop()
        if self.host is not None:
            self.host.stop(deadline)
        if self.exporter is not None:
            self.exporter.stop()
        if self.metrics is not None:
            remove_hook(self.metrics)
        if self.trace_hook is not None:
            remove_hook(self.trace_hook)
            tracing.flush()
