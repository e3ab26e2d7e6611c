"""The one task batchery sends: a chunk of one job's items, routed to its model's queue."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject

from batchery.batching import QueueClosed
from batchery.workers.host import current_host

CHUNK_TASK = "batchery.run_chunk"


@shared_task(name=CHUNK_TASK, ignore_result=True)
def run_chunk(job_id: str, model: str, start: int, inputs: list[Any], indices: list[int] | None = None) -> dict[str, Any]:
    """Run items ``indices`` (default ``start .. start + len(inputs) - 1``) of a job; stored items are skipped."""
    indices = indices or list(range(start, start + len(inputs)))
    try:
        return current_host().run_chunk(job_id, model, indices, inputs)
    except QueueClosed:
        raise Reject("worker is shutting down", requeue=True)
