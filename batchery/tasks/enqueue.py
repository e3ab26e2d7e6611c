"""Splitting a job into chunks and sending them: never one Celery message per item."""

from __future__ import annotations

import time
import uuid
from typing import Any, Sequence

from celery import Celery

from batchery.errors import Unavailable
from batchery.models.registry import ModelSpec, Registry
from batchery.monitoring.metrics import record_job_finished
from batchery.retry.dead_letters import DeadLetters
from batchery.store import JobStore
from batchery.tasks.chunk import CHUNK_TASK


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a job of ``total`` items."""
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def send_job(celery: Celery, spec: ModelSpec, job_id: str, inputs: Sequence[Any], chunk_size: int) -> int:
    """Send one task per chunk to the model's queue over one producer connection; returns the chunk count."""
    bounds = chunk_bounds(len(inputs), chunk_size)
    with celery.producer_or_acquire() as producer:
        for start, stop in bounds:
            send_chunk(celery, spec, job_id, start, list(inputs[start:stop]), f"{job_id}.{start}", producer)
    return len(bounds)


def send_chunk(
    celery: Celery, spec: ModelSpec, job_id: str, start: int, inputs: list[Any], task_id: str, producer: Any = None
) -> None:
    """One chunk task on the model's queue; its id names the job and first index, as Flower shows it."""
    celery.send_task(
        CHUNK_TASK,
        kwargs={"job_id": job_id, "model": spec.name, "start": start, "inputs": inputs},
        queue=spec.queue,
        routing_key=spec.queue,
        task_id=task_id,
        producer=producer,
    )


def new_job_id() -> str:
    return uuid.uuid4().hex


def submit_job(
    celery: Celery,
    store: JobStore,
    spec: ModelSpec,
    inputs: Sequence[Any],
    *,
    chunk_size: int,
    metadata: dict[str, Any] | None = None,
    ttl_s: int | None = None,
    job_id: str | None = None,
    timeout_s: float | None = None,
) -> str:
    """Record a new job and queue its chunks; a job whose chunks cannot be sent is marked ``failed``."""
    job_id = job_id or new_job_id()
    fields: dict[str, Any] = {"model": spec.name, "version": spec.version, "total": len(inputs)}
    if metadata is not None:
        fields["metadata"] = metadata
    if timeout_s is not None:
        fields["deadline"] = time.time() + timeout_s
    store.create(job_id, fields, ttl_s)
    try:
        send_job(celery, spec, job_id, inputs, chunk_size)
    except Exception as exc:
        store.fail(job_id, f"could not queue the job: {exc}")
        if (finished := store.claim_finish(job_id)) is not None:
            record_job_finished(*finished)
        raise Unavailable(f"the broker did not take the job: {exc}") from exc
    return job_id


def retry_dead_letters(celery: Celery, dead_letters: DeadLetters, registry: Registry, limit: int = 1000) -> int:
    """Put up to ``limit`` dead items back into their own jobs and queue each again; returns how many."""
    retried = 0
    for entry in dead_letters.list(0, limit):
        if entry["model"] not in registry.names() or not dead_letters.take(entry):
            continue
        spec = registry.get(entry["model"])
        send_chunk(celery, spec, entry["job_id"], entry["index"], [entry["input"]], task_id=f"{entry['job_id']}.{entry['index']}.retry-{entry['id']}")
        retried += 1
    return retried
