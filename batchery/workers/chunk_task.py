"""The one task batchery sends: a chunk of one job's items, named by its job and number, routed to its
model's queue. The chunk's indices and inputs are a Redis record (:mod:`batchery.store.chunks`).

A chunk that Redis fails under (a lost connection, a restart, a failover) is retried here, in the task, with
backoff; a retry redoes only the items still missing. It is never retried by publishing a new message, since
the broker is often the very Redis that just failed, and a message Celery cannot republish is lost. A chunk
that exhausts its retries ends its missing items with ``store_unavailable`` and puts them in the dead-letter
store; if even that cannot be written, the message goes back to the broker. A chunk whose worker is shutting
down, or whose batcher died, goes back to the queue for another worker.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import kombu.exceptions
import redis
from celery import Task, shared_task
from celery.exceptions import Reject

from batchery import tracing
from batchery.batching import BatcherStopped, QueueClosed
from batchery.monitoring import metrics
from batchery.tasks.names import CHUNK_TASK
from batchery.tiers import STANDARD
from batchery.workers.host import current_host

#: Failures of the store or the broker, not of the model: worth running the chunk again.
CHUNK_RETRY_ON = (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError, TimeoutError)
log = logging.getLogger(__name__)


@shared_task(name=CHUNK_TASK, ignore_result=True, bind=True)
def run_chunk(self: Task, job_id: str, model: str, chunk: int, tier: str = STANDARD) -> dict[str, Any]:
    """Run chunk number ``chunk`` of a job; items already stored are skipped, a chunk already done is a no-op."""
    queue = (self.request.delivery_info or {}).get("routing_key", "")
    with tracing.chunk_span(self.request.headers, job_id, chunk, queue, self.request.id):
        return _run(self, job_id, model, chunk, tier)


def _run(task: Task, job_id: str, model: str, chunk: int, tier: str) -> dict[str, Any]:
    host = current_host()
    taken = None
    attempt = 0
    while True:
        try:
            taken = taken or host.take(job_id, model, chunk, tier)
            if taken is None:
                return {"job_id": job_id, "chunk": chunk, "skipped": "done already"}
            return host.run_chunk(job_id, model, chunk, taken)
        except (QueueClosed, BatcherStopped) as exc:
            host.hand_back(job_id, chunk)
            raise Reject(f"chunk handed back: {exc}", requeue=True)
        except CHUNK_RETRY_ON as exc:
            if taken is not None:  # some items may be stored: the retry asks which are still missing
                taken = dataclasses.replace(taken, first=False)
            attempt += 1
            if attempt > host.chunk_retry.retries:
                return _give_up(host, task.request.id, job_id, model, chunk, taken, exc)
            delay = host.chunk_retry.delay(attempt)
            metrics.CHUNK_RETRIES.labels(model).inc()
            log.warning("chunk %s: the store failed (%s); retry %d of %d in %.1fs", task.request.id, exc, attempt, host.chunk_retry.retries, delay)
            time.sleep(delay)


def _give_up(host: Any, request_id: str, job_id: str, model: str, chunk: int, taken: Any, cause: BaseException) -> dict[str, Any]:
    """Dead-letter what is still missing; if Redis refuses even that, hand the message back to the broker."""
    if taken is None:
        log.error("chunk %s: the store stayed unavailable for %d retries: back to the broker (%s)", request_id, host.chunk_retry.retries, cause)
        raise Reject(f"the store is unavailable: {cause}", requeue=True)
    try:
        gave_up = host.give_up(job_id, model, chunk, taken, cause)
    except CHUNK_RETRY_ON as exc:
        log.error("chunk %s: gave up after %d retries and could not dead-letter it (%s): back to the broker", request_id, host.chunk_retry.retries, exc)
        raise Reject(f"the store is unavailable: {exc}", requeue=True)
    log.error("chunk %s: gave up after %d retries, %d items dead-lettered: %s", request_id, host.chunk_retry.retries, gave_up, cause)
    return {"job_id": job_id, "chunk": chunk, "gave_up": gave_up}
