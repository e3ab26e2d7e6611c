"""The one task batchery sends: a chunk of one job's items, routed to its model's queue.

A chunk whose outputs Redis would not take (a lost connection, a failover) is retried as a whole by Celery,
with backoff; the retry redoes only the items still missing. One that exhausts its retries ends its missing
items with ``store_unavailable`` and puts them in the dead-letter store.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from celery import Task, shared_task
from celery.exceptions import Reject

from batchery.batching import QueueClosed
from batchery.monitoring import metrics
from batchery.workers.host import current_host

CHUNK_TASK = "batchery.run_chunk"
#: Failures of the store or the broker, not of the model: worth running the whole chunk again.
CHUNK_RETRY_ON = (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError, TimeoutError)
log = logging.getLogger(__name__)


@shared_task(name=CHUNK_TASK, ignore_result=True, bind=True)
def run_chunk(
    self: Task, job_id: str, model: str, start: int, inputs: list[Any], indices: list[int] | None = None
) -> dict[str, Any]:
    """Run items ``indices`` (default ``start .. start + len(inputs) - 1``) of a job; stored items are skipped."""
    indices = indices or list(range(start, start + len(inputs)))
    host = current_host()
    try:
        return host.run_chunk(job_id, model, indices, inputs)
    except QueueClosed:
        raise Reject("worker is shutting down", requeue=True)
    except CHUNK_RETRY_ON as exc:
        attempt = self.request.retries + 1
        if attempt > host.chunk_retry.attempts:
            gave_up = host.give_up(job_id, model, indices, inputs, exc)
            log.error("chunk %s: gave up after %d retries, %d items dead-lettered: %s", self.request.id, attempt - 1, gave_up, exc)
            return {"job_id": job_id, "gave_up": gave_up}
        metrics.CHUNK_RETRIES.labels(model).inc()
        raise self.retry(exc=exc, countdown=host.chunk_retry.delay(attempt), max_retries=host.chunk_retry.attempts)
