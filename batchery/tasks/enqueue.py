"""Turning a job into chunk tasks: never one Celery message per item.

Before anything is sent, the job's items are claimed against the result cache (hits are written at once;
inputs already being computed wait for that computation) and counted into the model's backlog, whose bound
turns a flood into ``429`` answers rather than an unbounded queue.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import orjson
from celery import Celery

from batchery.cache import ResultCache
from batchery.errors import TooManyRequests, Unavailable
from batchery.models.registry import ModelSpec, Registry
from batchery.monitoring.metrics import record_cache, record_job_finished
from batchery.retry.dead_letters import DeadLetters
from batchery.settings import Settings
from batchery.store import ItemResult, JobStore
from batchery.store.backlog import Backlog
from batchery.tasks.chunk import CHUNK_TASK


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a job of ``total`` items."""
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def send_chunk(
    celery: Celery,
    spec: ModelSpec,
    job_id: str,
    indices: Sequence[int],
    inputs: list[Any],
    task_id: str,
    producer: Any = None,
) -> None:
    """One chunk task on the model's queue; its id names the job and first index, as Flower shows it.

    A run of consecutive indices travels as its first index alone; a gappy one (cache hits removed) in full.
    """
    kwargs: dict[str, Any] = {"job_id": job_id, "model": spec.name, "start": indices[0], "inputs": inputs}
    if list(indices) != list(range(indices[0], indices[0] + len(indices))):
        kwargs["indices"] = list(indices)
    celery.send_task(CHUNK_TASK, kwargs=kwargs, queue=spec.queue, routing_key=spec.queue, task_id=task_id, producer=producer)


def send_items(
    celery: Celery, spec: ModelSpec, job_id: str, items: Sequence[tuple[int, Any]], chunk_size: int, suffix: str = ""
) -> int:
    """Send ``(index, input)`` pairs in chunks over one producer connection; returns the chunk count.

    Task ids are ``<job id>.<first index><suffix>``: a job's first sending of an index needs no suffix.
    """
    bounds = chunk_bounds(len(items), chunk_size)
    with celery.producer_or_acquire() as producer:
        for start, stop in bounds:
            indices, inputs = zip(*items[start:stop])
            send_chunk(celery, spec, job_id, indices, list(inputs), f"{job_id}.{indices[0]}{suffix}", producer)
    return len(bounds)


def send_job(celery: Celery, spec: ModelSpec, job_id: str, inputs: Sequence[Any], chunk_size: int) -> int:
    """Send every item of a job, bypassing cache and backlog (tests and tools that create jobs themselves)."""
    return send_items(celery, spec, job_id, list(enumerate(inputs)), chunk_size)


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Enqueuer:
    """Accepts jobs: records them, claims their items against the cache, bounds the backlog, sends chunks."""

    celery: Celery
    store: JobStore
    settings: Settings
    registry: Registry

    def __post_init__(self) -> None:
        self.cache = ResultCache(self.store.redis, self.store.job_ttl_s)
        self.backlog = Backlog(self.store.redis)

    def submit(
        self,
        spec: ModelSpec,
        inputs: Sequence[Any],
        *,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        ttl_s: int | None = None,
        cache: bool = True,
    ) -> str:
        """Record a new job and queue what the cache cannot answer; 429 when the model's backlog is full."""
        self._reserve(spec, len(inputs))
        job_id = job_id or new_job_id()
        fields: dict[str, Any] = {"model": spec.name, "version": spec.version, "total": len(inputs)}
        if metadata is not None:
            fields["metadata"] = metadata
        if timeout_s is not None:
            fields["deadline"] = time.time() + timeout_s
        claimed = cache and self.settings.cache_enabled
        try:
            self.store.create(job_id, fields, ttl_s)
            todo = self._claim(spec, job_id, inputs) if claimed else list(range(len(inputs)))
        except Exception:
            self.backlog.release(spec.name, len(inputs))
            raise
        self.backlog.release(spec.name, len(inputs) - len(todo))
        self._send(spec, job_id, todo, inputs, claimed)
        return job_id

    def resubmit(self, spec: ModelSpec, job_id: str, indices: Sequence[int], value: Any) -> None:
        """Items that waited on an identical item that ended for its own job's reasons: claim them anew."""
        inputs = [value] * len(indices)
        claim = self.cache.claim(job_id, spec, inputs, indices)
        self._record_hits(job_id, claim.hits)
        if claim.owned:
            self.backlog.reserve(spec.name, len(claim.owned), bound=0)
            items = [(index, value) for index in claim.owned]
            send_items(self.celery, spec, job_id, items, self.settings.chunk_size, suffix=f".{uuid.uuid4().hex[:8]}")

    def release(self, key: str, waiters: list[str], input_json: bytes) -> None:
        """The store's release hook: the waiters of ``key`` (``"<job id>|<index>"``) are claimed anew."""
        spec = self.registry.get(key.rsplit(":", 1)[0])
        value = orjson.loads(input_json)
        by_job: dict[str, list[int]] = {}
        for waiter in waiters:
            job_id, _, index = waiter.rpartition("|")
            by_job.setdefault(job_id, []).append(int(index))
        for job_id, indices in by_job.items():
            self.resubmit(spec, job_id, indices, value)

    def _reserve(self, spec: ModelSpec, items: int) -> None:
        taken, queued = self.backlog.reserve(spec.name, items, self.settings.max_queued_items)
        if not taken:
            raise TooManyRequests(
                f"model {spec.name!r} has {queued} items queued, the most it takes is {self.settings.max_queued_items}",
                retry_after_s=self.settings.retry_after_s,
            )

    def _claim(self, spec: ModelSpec, job_id: str, inputs: Sequence[Any]) -> list[int]:
        claim = self.cache.claim(job_id, spec, inputs)
        record_cache(spec.name, hits=len(claim.hits) + claim.waiting, misses=len(claim.owned))
        self._record_hits(job_id, claim.hits)
        return claim.owned

    def _record_hits(self, job_id: str, hits: list[tuple[int, bytes]]) -> None:
        if hits:
            self.store.record(ItemResult(job_id, index, raw, True, cached=True) for index, raw in hits)

    def _send(self, spec: ModelSpec, job_id: str, todo: Sequence[int], inputs: Sequence[Any], claimed: bool) -> None:
        """Send the items to compute; if the broker refuses, the job fails and its cache claims are dropped."""
        if not todo:
            return
        try:
            send_items(self.celery, spec, job_id, [(i, inputs[i]) for i in todo], self.settings.chunk_size)
        except Exception as exc:
            self.backlog.release(spec.name, len(todo))
            if claimed:
                self.cache.abandon(spec, [inputs[i] for i in todo])
            self.store.fail(job_id, f"could not queue the job: {exc}")
            record_job_finished(spec.name, "failed", None)
            raise Unavailable(f"the broker did not take the job: {exc}") from exc


def retry_dead_letters(
    celery: Celery, dead_letters: DeadLetters, registry: Registry, limit: int = 1000, model: str | None = None
) -> int:
    """Put up to ``limit`` dead items (of ``model``, or all) back into their own jobs and queue each again."""
    retried = 0
    for entry in dead_letters.list(0, limit, model):
        if entry["model"] not in registry.names() or not dead_letters.take(entry):
            continue
        spec = registry.get(entry["model"])
        task_id = f"{entry['job_id']}.{entry['index']}.retry-{entry['id']}"
        Backlog(dead_letters.redis).reserve(spec.name, 1, bound=0)
        send_chunk(celery, spec, entry["job_id"], [entry["index"]], [entry["input"]], task_id)
        retried += 1
    return retried
