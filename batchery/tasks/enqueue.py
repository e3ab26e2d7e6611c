"""Turning a job into chunk tasks: never one Celery message per item.

Before anything is sent, the job's items are claimed against the result cache (hits are written at once,
inside Redis; inputs already being computed wait for that computation) and counted into the model's backlog,
whose bound turns a flood into ``429`` answers rather than an unbounded queue.

A chunk is a Redis record (:mod:`batchery.store.chunks`) written before its Celery message, which carries only
the chunk's name: the record is what lets the janitor send a chunk again whatever happened to its message.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import orjson
from celery import Celery

from batchery import tracing
from batchery.cache import ResultCache
from batchery.errors import Cancelled, DeadlineExceeded, ModelNotFound, TooManyRequests, Unavailable
from batchery.models.precision import quantized
from batchery.models.registry import ModelSpec, Registry
from batchery.monitoring.metrics import record_cache, record_job_finished
from batchery.results import ResultsRequest
from batchery.store.dead_letters import DeadLetters
from batchery.settings import Settings
from batchery.store import JobStore
from batchery.store.backlog import Backlog
from batchery.store.chunks import UNBOUNDED, ChunkRecord, ChunkStore, Released
from batchery.store.codec import encode_error
from batchery.tasks.budget import LaneBudget
from batchery.tasks.names import CHUNK_TASK
from batchery.tiers import STANDARD
from batchery.tiers import of_job as job_tier

#: Chunk records written per round trip.
RECORDS_PER_TRIP = 64


def chunk_bounds(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a job of ``total`` items."""
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def task_id(job_id: str, number: int, suffix: str = "") -> str:
    """``<job id>.<chunk number>``, as Flower and the logs show it; a chunk sent again gets a suffix."""
    return f"{job_id}.{number}{suffix}"


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Dispatcher:
    """Sends chunks: each one's record first, then, as its lane's budget allows, its message.

    ``chunk_size`` is the deployment's (``BATCHERY_CHUNK_SIZE``), for models that set none of their own.
    ``budget`` says how many chunks a queue may have in flight (:mod:`batchery.tasks.budget`); the chunks over
    it are held back in Redis and released round-robin across the lane's jobs as chunks finish.
    """

    celery: Celery
    store: JobStore
    chunk_size: int
    budget: Callable[[str], int] = lambda queue: UNBOUNDED

    def __post_init__(self) -> None:
        self.chunks = ChunkStore(self.store.redis)

    def send(
        self, spec: ModelSpec, job_id: str, items: Sequence[tuple[int, Any]], expires_at: int, tier: str = STANDARD
    ) -> list[int]:
        """Write ``(index, input)`` pairs of one job as chunks, hold them in the job's lane and release what
        the lane's budget allows; returns the chunk numbers.

        If publishing fails part-way, the chunks released and not published stay marked as sent: the caller
        either deletes them (:meth:`ChunkStore.delete`) or leaves them for the janitor to send.
        """
        queue = spec.queue_for(tier)
        held = self.budget(queue) < UNBOUNDED
        bounds = chunk_bounds(len(items), spec.chunk_size or self.chunk_size)
        numbers = list(self.store.next_chunks(job_id, len(bounds)))
        sent_at = time.time()
        trace = tracing.carrier()
        for group in range(0, len(bounds), RECORDS_PER_TRIP):
            pipe = self.store.redis.pipeline(transaction=False)
            for k in range(group, min(group + RECORDS_PER_TRIP, len(bounds))):
                start, stop = bounds[k]
                indices, inputs = zip(*items[start:stop])
                self.chunks.add(
                    pipe, job_id, numbers[k], spec.key, queue, tier, indices, orjson.dumps(list(inputs)),
                    task_id(job_id, numbers[k]), sent_at + k * 1e-6, expires_at, held, trace,
                )
            if held and group + RECORDS_PER_TRIP >= len(bounds):
                self.chunks.enter_lane(pipe, job_id, queue)
            pipe.execute()
        if held:
            self.pump(queue)
        else:
            self.publish_all([Released(job_id, n, spec.key, queue, task_id(job_id, n), trace) for n in numbers])
        return numbers

    def pump(self, queue: str) -> int:
        """Release what the lane of ``queue`` may have in flight now, and publish it; returns how many."""
        released = self.chunks.release(queue, self.budget(queue), time.time())
        self.publish_all(released)
        return len(released)

    def publish_all(self, released: Sequence[Released]) -> None:
        """Publish released chunks over one producer connection."""
        if not released:
            return
        sent_at = time.time()
        with self.celery.producer_or_acquire() as producer:
            for k, chunk in enumerate(released):
                self.publish(
                    chunk.model, chunk.queue, chunk.job_id, chunk.number, chunk.task_id, sent_at + k * 1e-6, producer,
                    chunk.trace,
                )

    def publish(
        self, model: str, queue: str, job_id: str, number: int, task: str, sent_at: float, producer: Any = None,
        trace: str = "",
    ) -> None:
        """One chunk's message: its name and tier, when it was sent (which the janitor compares against), and
        the context of its trace (``trace``, as its record keeps it: :mod:`batchery.tracing.messages`)."""
        headers: dict[str, Any] = {"sent_at": sent_at}
        with tracing.sending(trace, headers, job_id, number, queue, task):
            self.celery.send_task(
                CHUNK_TASK,
                kwargs={"job_id": job_id, "model": model, "chunk": number, "tier": queue.rsplit(".", 1)[1]},
                queue=queue,
                routing_key=queue,
                task_id=task,
                headers=headers,
                producer=producer,
            )

    def resend(self, record: ChunkRecord, holder: str | None = None) -> bool:
        """Send a chunk again under a new message id (taking it from ``holder``); False when it is done."""
        task = task_id(record.job_id, record.number, f".{uuid.uuid4().hex[:6]}")
        sent_at = time.time()
        found = self.chunks.requeue(record.job_id, record.number, task, sent_at, holder)
        if found is None:
            return False
        model, queue = found
        self.publish(model, queue, record.job_id, record.number, task, sent_at, trace=record.trace)
        return True


@dataclass
class Enqueuer:
    """Accepts jobs: records them, claims their items against the cache, bounds the backlog, sends chunks."""

    celery: Celery
    store: JobStore
    settings: Settings
    registry: Registry

    def __post_init__(self) -> None:
        self.cache = ResultCache(self.store)
        self.backlog = Backlog(self.store.redis)
        budget = LaneBudget(self.store.redis, self.settings.chunks_in_flight_per_worker)
        self.dispatcher = Dispatcher(self.celery, self.store, self.settings.chunk_size, budget)

    def submit(self, spec: ModelSpec, inputs: Sequence[Any], *, job_id: str | None = None, **options: Any) -> str:
        """:meth:`_submit`, in a trace span of its own when tracing is on: the job's chunks' sends are its children."""
        job_id = job_id or new_job_id()
        attributes = {
            "batchery.job_id": job_id, "batchery.model": spec.ref, "batchery.items": len(inputs),
            "batchery.tier": options.get("tier", STANDARD),
        }
        with tracing.span("batchery.enqueue", attributes):
            return self._submit(spec, inputs, job_id=job_id, **options)

    def _submit(
        self,
        spec: ModelSpec,
        inputs: Sequence[Any],
        *,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        ttl_s: int | None = None,
        cache: bool = True,
        tier: str = STANDARD,
        owner: str | None = None,
        webhook: str | None = None,
        results: ResultsRequest | None = None,
    ) -> str:
        """Record a new job (with the name of the API key that ``owner``s it, if any, the ``webhook`` URL to
        call when it ends, and the ``results`` files to write then) and queue what the cache cannot answer; 429
        when the model's backlog is full.

        Whatever fails after the job is recorded, the job ends ``failed``, its claims are dropped (their
        waiters handed off) and its backlog given back: nothing is left half-accepted.
        """
        self._reserve(spec, len(inputs))
        job_id = job_id or new_job_id()
        fields: dict[str, Any] = {"model": spec.name, "version": spec.version, "total": len(inputs), "tier": tier}
        if (quantization := quantized(spec)) is not None:
            fields["quantize"] = quantization
        if metadata is not None:
            fields["metadata"] = metadata
        if owner is not None:
            fields["owner"] = owner
        if webhook is not None:
            fields["webhook"] = {"url": webhook}
        if results is not None:
            fields["results"] = results.as_dict()
        if timeout_s is not None:
            fields["deadline"] = time.time() + timeout_s
        ttl = ttl_s or self.store.job_ttl_s
        claimed = cache and self.settings.cache_enabled
        fields["claims"] = int(claimed)  # '0': the storing script makes no claim lookup for its items
        try:
            self.store.create(job_id, fields, ttl)
            todo = self._claim(spec, job_id, inputs) if claimed else list(range(len(inputs)))
        except Exception as exc:
            self._undo(spec, job_id, len(inputs), len(inputs), claimed, exc)
            raise
        self.backlog.release(spec.key, len(inputs) - len(todo))
        if todo:
            items = [(i, inputs[i]) for i in todo]
            self._send(spec, job_id, len(inputs), items, int(time.time() + ttl), claimed, tier)
        return job_id

    def cancel(self, job_id: str) -> str | None:
        """Cancel the job and drop its claims at once: items of other jobs waiting on them are computed anew."""
        status = self.store.cancel(job_id)
        if status == "cancelled":
            job = self.store.get(job_id)
            if job is not None:
                self.cache.abandon(job_id, job["total"])
        return status

    def resubmit(self, job_id: str, items: Sequence[tuple[int, Any]]) -> int:
        """Items that waited on an identical item that will not land for them: claim them anew and send those
        this job now owns, in chunks. Items of a cancelled or overdue job end as such instead; items that
        meanwhile have a result are left alone. Returns how many were sent."""
        job = self.store.get(job_id)
        if job is None:
            return 0
        values = dict(items)
        indices = self.store.missing(job_id, list(values))
        error = _unrunnable(job)
        if error is not None:
            self.store.fail_items(job_id, indices, encode_error(error))
            return 0
        if not indices:
            return 0
        spec = self.registry.get(f"{job['model']}@{job['version']}")
        claim = self.cache.claim(job_id, spec, [values[i] for i in indices], indices, skip_done=True)
        sending = sorted(claim.owned + claim.again)  # again: claimed by a run of this that may not have sent them
        if not sending:
            return 0
        self.backlog.reserve(spec.key, len(claim.owned), bound=0)
        try:
            items = [(i, values[i]) for i in sending]
            self.dispatcher.send(spec, job_id, items, int(job["expires_at"] or 0), job_tier(job))
        except Exception:
            self.backlog.release(spec.key, len(claim.owned))
            self.cache.abandon_items(job_id, sending)
            raise
        return len(sending)

    def _reserve(self, spec: ModelSpec, items: int) -> None:
        taken, queued = self.backlog.reserve(spec.key, items, self.settings.max_queued_items)
        if not taken:
            raise TooManyRequests(
                f"model {spec.name!r} has {queued} items queued, the most it takes is {self.settings.max_queued_items}",
                retry_after_s=self.settings.retry_after_s,
            )

    def _claim(self, spec: ModelSpec, job_id: str, inputs: Sequence[Any]) -> list[int]:
        claim = self.cache.claim(job_id, spec, inputs)
        record_cache(spec.key, hits=claim.hits + claim.waiting, misses=len(claim.owned))
        return claim.owned

    def _send(
        self, spec: ModelSpec, job_id: str, total: int, items: list[tuple[int, Any]], expires_at: int, claimed: bool,
        tier: str,
    ) -> None:
        """Send the items to compute; if the broker refuses, the job fails and what it had taken is given back."""
        try:
            self.dispatcher.send(spec, job_id, items, expires_at, tier)
        except Exception as exc:
            self._undo(spec, job_id, total, len(items), claimed, exc)
            raise Unavailable(f"the broker did not take the job: {exc}") from exc

    def _undo(self, spec: ModelSpec, job_id: str, total: int, reserved: int, claimed: bool, exc: Exception) -> None:
        """A job that could not be accepted whole: no chunk of it runs, no claim of it stays, it ends failed."""
        self.backlog.release(spec.key, reserved)
        job = self.store.get(job_id)
        if job is None:
            return
        self.dispatcher.chunks.delete(job_id, range(job["chunks"]), spec.queue_for(job_tier(job)))
        if claimed:
            self.cache.abandon(job_id, total)
        self.store.fail(job_id, f"could not queue the job: {exc}")
        record_job_finished(spec.name, "failed", None)


def _unrunnable(job: dict[str, Any]) -> Exception | None:
    """Why a job's items should not be computed any more, if they should not."""
    if job["status"] == "cancelled":
        return Cancelled()
    if job["deadline"] is not None and time.time() > job["deadline"]:
        return DeadlineExceeded()
    return None


def _known(registry: Registry, key: str) -> ModelSpec | None:
    """The version a dead letter's ``model`` (a version's key) names, if it is still served."""
    try:
        return registry.get(key)
    except ModelNotFound:
        return None


def retry_dead_letters(enqueuer: Enqueuer, dead_letters: DeadLetters, limit: int = 1000, model: str | None = None) -> int:
    """Put up to ``limit`` dead items (of ``model``, or all) back into their own jobs and queue them again,
    a job's items together in chunks."""
    by_job: dict[str, list[tuple[int, Any]]] = {}
    specs: dict[str, ModelSpec] = {}
    for entry in dead_letters.list(0, limit, model):
        spec = _known(enqueuer.registry, entry["model"])
        if spec is None or not dead_letters.take(entry):
            continue
        specs[entry["job_id"]] = spec
        by_job.setdefault(entry["job_id"], []).append((entry["index"], entry["input"]))
    for job_id, items in by_job.items():
        job = enqueuer.store.get(job_id)
        if job is None:
            continue
        spec = specs[job_id]
        enqueuer.backlog.reserve(spec.key, len(items), bound=0)
        enqueuer.dispatcher.send(spec, job_id, items, int(job["expires_at"] or 0), job_tier(job))
    return sum(len(items) for items in by_job.values())
