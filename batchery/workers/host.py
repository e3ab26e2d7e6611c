"""The models one worker process serves: loaded once, warmed, each behind its own batcher.

Chunk tasks run on the worker's threads and reach the batchers through :func:`current_host`; there is one
host per process, created by the worker bootstep before the consumer starts taking messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any, Callable, Sequence

from batchery.batching import Batcher, add_hook, remove_hook
from batchery.errors import BatcheryError, Cancelled, DeadlineExceeded, ModelNotFound, StoreUnavailable
from batchery.models.registry import QUEUE_PREFIX, ModelSpec
from batchery.monitoring import metrics
from batchery.monitoring.activity import ActivityHook
from batchery.retry import RetryPolicy
from batchery.store.dead_letters import DeadLetter, DeadLetters
from batchery.faults.injection import with_faults, with_store_faults
from batchery.runtimes import load_runtime
from batchery.settings import Settings
from batchery.store import ItemResult, JobStore
from batchery.store.chunks import UNBOUNDED, ChunkStore, Released, Taken
from batchery.tiers import TIERS
from batchery.store.codec import encode_error
from batchery.workers.cancellations import CancellationListener
from batchery.workers.devices import physical_device
from batchery.workers.heartbeat import Heartbeat

log = logging.getLogger(__name__)

_HOST: "ModelHost | None" = None


class ModelHost:
    def __init__(self, specs: Sequence[ModelSpec], settings: Settings, hostname: str, store: JobStore) -> None:
        self.specs = {spec.key: spec for spec in specs}
        self.settings = settings
        self.hostname = hostname
        self.store = store
        self.chunks = ChunkStore(store.redis)
        self.device = settings.worker_device
        self.batchers: dict[str, Batcher] = {}
        self.warm_batch_sizes: dict[str, list[int]] = {}
        self.heartbeat: Heartbeat | None = None
        self.cancelled = CancellationListener(store.redis)
        self.retry = RetryPolicy(settings.retry_attempts, settings.retry_base_s, settings.retry_max_s)
        self.chunk_retry = RetryPolicy(settings.chunk_retry_attempts, settings.chunk_retry_base_s, settings.chunk_retry_max_s)
        self.activity = ActivityHook(store.redis)
        #: Models that failed to load or warm up here, with why.
        self.unavailable: dict[str, str] = {}
        self.stopping = False
        #: Told why, when the worker stops being healthy (its bootstep then has Celery shut it down).
        self.on_unhealthy: Callable[[str], None] | None = None
        #: How many chunks a queue may have in flight, and who publishes the chunks a finished one lets out.
        self.budget: Callable[[str], int] = lambda queue: UNBOUNDED
        self.on_release: Callable[[list[Released]], None] | None = None

    def start(self) -> None:
        """Load and warm every model and start the batchers; :meth:`announce` follows once consuming.

        A model that fails to load or warm up is a configuration error, not worth a restart: it is marked
        unavailable with its reason (in the heartbeat, so ``/readyz`` and ``/v1/models`` show it) and the
        worker serves the others.
        """
        self.cancelled.start()
        add_hook(self.activity.start())
        for spec in self.specs.values():
            try:
                self._load(spec)
            except Exception as exc:
                self.unavailable[spec.key] = f"{type(exc).__name__}: {exc}"
                log.exception("model %s could not be loaded on %s; this worker serves the others: %s", spec.ref, self.device, exc)

    def _load(self, spec: ModelSpec) -> None:
        started = time.perf_counter()
        runtime = load_runtime(spec, self.device, self.settings)
        try:
            self.warm_batch_sizes[spec.key] = runtime.warm_up()
        except Exception:
            runtime.close()
            raise
        runtime = with_faults(runtime, self.settings)
        store = with_store_faults(self.store, spec, self.settings)
        retry = dataclasses.replace(self.retry, on_retry=metrics.RETRIES.labels(spec.key).inc)
        batcher = Batcher(runtime, store, self.cancelled, retry, self.settings.oom_cooldown_s)
        batcher.on_death = self._batcher_died
        self.batchers[spec.key] = batcher.start()
        log.info("model %s loaded on %s in %.1fs", spec.ref, self.device, time.perf_counter() - started)

    @property
    def served(self) -> list[ModelSpec]:
        """The models this worker runs: those that loaded."""
        return [spec for spec in self.specs.values() if spec.key in self.batchers]

    @property
    def healthy(self) -> bool:
        """False once a batcher has died: the worker then stops counting as live, and restarts."""
        return all(batcher.alive for batcher in self.batchers.values())

    def _batcher_died(self, batcher: Batcher, exc: BaseException) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()
        if self.on_unhealthy is not None:
            self.on_unhealthy(f"the batcher of model {batcher.spec.key} died: {exc!r}")

    def announce(self) -> None:
        """Start the heartbeat: from now on the API counts this worker as live for its models."""
        self.heartbeat = Heartbeat(
            self.store.redis, self.hostname, self.describe(), self.settings.worker_heartbeat_s,
            self.settings.worker_heartbeat_ttl_s, ready=lambda: self.healthy and not self.stopping,
        )
        self.heartbeat.start()

    def stop(self, deadline: float | None = None) -> None:
        """Stop counting as ready, let each batcher finish the items it holds by ``deadline`` (monotonic; the
        drain timeout by default), then withdraw the heartbeat. The heartbeat lives on while draining, so the
        janitor never takes this worker's chunks from it while it is still finishing them."""
        deadline = deadline if deadline is not None else time.monotonic() + self.settings.worker_drain_timeout_s
        self.stopping = True
        if self.heartbeat:
            self.heartbeat.beat()
        for batcher in self.batchers.values():
            batcher.stop(deadline)
        if self.heartbeat:
            self.heartbeat.stop()
        remove_hook(self.activity)
        self.activity.stop()
        self.cancelled.stop()

    def describe(self) -> dict[str, Any]:
        """The heartbeat: ``device`` as the machine numbers it (``cuda:3``), ``runtime_device`` as the models
        see it (``cuda:0`` in a process pinned to one GPU), and the ``CUDA_VISIBLE_DEVICES`` that pins it;
        ``unavailable`` names each model that failed to load here, with why."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        served = self.served
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": physical_device(self.device, visible),
            "runtime_device": self.device,
            "cuda_visible_devices": visible,
            "threads": self.settings.worker_threads or None,
            "metrics_port": self.settings.worker_metrics_port or None,
            "models": [spec.ref for spec in served],
            "runtimes": {spec.key: spec.runtime for spec in served},
            "warm_batch_sizes": self.warm_batch_sizes,
            "queues": [queue for tier in TIERS for spec in served for queue in [spec.queue_for(tier)]],
            "unavailable": dict(self.unavailable),
            "started_at": time.time(),
        }

    def take(self, job_id: str, model: str, chunk: int, tier: str) -> Taken | None:
        """Take chunk ``chunk`` of a job to run it here, or None when it is done."""
        return self.chunks.take(job_id, chunk, _queue(model, tier), self.hostname)

    def hand_back(self, job_id: str, chunk: int) -> None:
        """This worker will not run the chunk after all (it is shutting down): another worker will."""
        try:
            self.chunks.requeue(job_id, chunk, "", time.time(), self.hostname)
        except Exception as exc:  # the janitor finds it in this worker's holding set when it is gone
            log.warning("could not hand back chunk %s.%s: %s", job_id, chunk, exc)

    def run_chunk(self, job_id: str, model: str, chunk: int, taken: Taken) -> dict[str, Any]:
        """Run the items of one chunk that have no result yet; returns once all are stored and the chunk is done."""
        outcome = self._run_items(job_id, model, taken.indices, taken.inputs, taken.tier, check=not taken.first)
        self.finish(job_id, model, chunk, taken.tier)
        return {"job_id": job_id, "chunk": chunk, **outcome}

    def finish(self, job_id: str, model: str, chunk: int, tier: str) -> None:
        """The chunk is done, and its place in flight goes to the next chunk of its lane, published here."""
        queue = _queue(model, tier)
        _, released = self.chunks.finish(job_id, chunk, queue, self.hostname, self.budget(queue), time.time())
        if released and self.on_release is not None:
            self.on_release(released)

    def _run_items(
        self, job_id: str, model: str, indices: Sequence[int], inputs: Sequence[Any], tier: str, check: bool = True
    ) -> dict[str, Any]:
        started, todo = self.store.begin(job_id, indices, check)
        if started is None:
            return {"skipped": "job no longer exists"}
        metrics.QUEUE_WAIT.labels(model, "broker", tier).observe(max(time.time() - started.created_at, 0.0))
        by_index = dict(zip(indices, inputs))
        if started.status == "cancelled":
            self._fail_items(job_id, model, todo, Cancelled())
            return {"cancelled": len(todo)}
        if started.deadline is not None and time.time() > started.deadline:
            self._fail_items(job_id, model, todo, DeadlineExceeded())
            return {"deadline_exceeded": len(todo)}
        batcher = self.batchers.get(model)
        if batcher is None:
            missing = ModelNotFound(f"worker {self.hostname} does not serve model {model!r}")
            self._fail_items(job_id, model, todo, missing)
            return {"failed": len(todo)}
        ticket = batcher.submit(job_id, [(i, by_index[i]) for i in todo], started.deadline, tier)
        batcher.wait(ticket)
        if ticket.error is not None:
            raise ticket.error
        return {"items": len(todo), "succeeded": ticket.succeeded, "failed": ticket.failed}

    def give_up(self, job_id: str, model: str, chunk: int, taken: Taken, cause: BaseException) -> int:
        """A chunk that exhausted its retries: its items still without a result end with an error and become
        dead letters (``batchery dlq retry`` runs them again), and the chunk is done. Returns how many;
        Redis may refuse this too."""
        indices, inputs = taken.indices, taken.inputs
        todo = self.store.missing(job_id, indices)
        error = StoreUnavailable(f"could not store this item's output after {self.chunk_retry.retries} retries: {cause}")
        by_index = dict(zip(indices, inputs))
        letters = [DeadLetter(job_id, i, model, by_index[i], error.as_dict(), self.chunk_retry.attempts) for i in todo]
        self.store.record(
            (ItemResult(job_id, i, encode_error(error), False) for i in todo),
            also=lambda pipe: DeadLetters(self.store.redis).add(pipe, letters),
        )
        self.finish(job_id, model, chunk, taken.tier)
        metrics.record_items(model, error.code, len(todo))
        if todo:
            metrics.DEAD_LETTERS.labels(model).inc(len(todo))
        return len(todo)

    def _fail_items(self, job_id: str, model: str, indices: Sequence[int], error: BatcheryError) -> None:
        """End items that will not reach a model with an explicit error, so the job still completes."""
        ended = self.store.fail_items(job_id, indices, encode_error(error))
        metrics.record_items(model, error.code, ended)


def _queue(model: str, tier: str) -> str:
    return f"{QUEUE_PREFIX}{model}.{tier}"


def set_host(host: ModelHost | None) -> None:
    global _HOST
    _HOST = host


def current_host() -> ModelHost:
    if _HOST is None:
        raise RuntimeError("no model host in this process: chunk tasks run only in a batchery worker")
    return _HOST
