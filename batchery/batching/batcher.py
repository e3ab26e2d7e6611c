"""The dynamic batcher: one per model in each worker process.

Chunk tasks running on the worker's threads hand their items to :meth:`Batcher.submit` and wait on the
returned :class:`Ticket`. Three threads move batches along, so that no stage waits on another's I/O:

    collect + prepare (pad, stack)  ->  run (the one thread that owns the model)  ->  write (one Redis round trip)

Items of any number of chunks and jobs share a batch; each chunk's ticket counts down as its items land.
Batches are shaped for the device: items are preprocessed (tokenised) as they arrive, so that texts of like
length can share a batch under a token budget (:mod:`batchery.batching.selection`), and a batch that runs out
of device memory is split while the model's batch size drops for a while (:mod:`batchery.batching.adaptive`).

A stage that dies is fatal to the batcher, never silent: it stops taking items, every chunk waiting on it is
told (:class:`BatcherStopped`, and the chunk goes back to the queue), and :attr:`Batcher.on_death` lets the
worker declare itself unhealthy and restart. No wait on a batcher is unbounded while the batcher is dead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Container, Sequence

from batchery import defaults, tiers
from batchery.batching import hooks
from batchery.batching.adaptive import AdaptiveBatchSize
from batchery.batching.queue import Item, ItemQueue
from batchery.batching.ticket import Ticket
from batchery.errors import BatcheryError, Cancelled, DeadlineExceeded, DeviceOutOfMemory, ModelError
from batchery.retry import RetryPolicy, as_error, run_isolated
from batchery.retry.policy import is_dead_letter
from batchery.store.dead_letters import DeadLetter, DeadLetters
from batchery.store import ItemResult
from batchery.store.codec import encode_error, encode_output
from batchery.tiers import STANDARD

if TYPE_CHECKING:
    from batchery.runtimes.base import Runtime
    from batchery.store import JobStore

log = logging.getLogger(__name__)
#: How often a chunk waiting on its ticket checks that the batcher is still alive.
WAIT_SLICE_S = 1.0
_STOP = object()
_CANCELLED = Cancelled()
_EXPIRED = DeadlineExceeded()


class BatcherStopped(Exception):
    """The batcher died (a stage raised) or stopped before storing these items: run them elsewhere."""


class Batcher:
    """Forms batches of at most ``max_batch_size`` items, waiting at most ``max_wait_ms`` for one to fill."""

    def __init__(
        self,
        runtime: "Runtime",
        store: "JobStore",
        cancelled: Container[str] = frozenset(),
        retry: RetryPolicy = RetryPolicy(),
        oom_cooldown_s: float = defaults.OOM_COOLDOWN_S,
    ) -> None:
        self.spec = runtime.spec
        self.runtime = runtime
        self.store = store
        self.cancelled = cancelled
        self.retry = retry
        self.batch_size = AdaptiveBatchSize(self.spec.max_batch_size, oom_cooldown_s, self.spec.key)
        self.dead_letters = DeadLetters(store.redis)
        self.queue = ItemQueue()
        self._prepared: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._ran: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._threads = [
            threading.Thread(target=self._guard, args=(loop,), name=f"batcher-{self.spec.name}-{loop.__name__.strip('_')}", daemon=True)
            for loop in (self._collect_loop, self._run_loop, self._write_loop)
        ]
        self.batches_run = 0
        #: Why the batcher died (a stage raised), or None while it lives.
        self.death: BaseException | None = None
        #: Called once, from the dying stage's thread, with the batcher and the error.
        self.on_death: Callable[["Batcher", BaseException], None] | None = None

    def start(self) -> "Batcher":
        for thread in self._threads:
            thread.start()
        return self

    def submit(
        self, job_id: str, inputs: Sequence[tuple[int, Any]], deadline: float | None = None, tier: str = STANDARD
    ) -> Ticket:
        """Queue ``(index, input)`` pairs of one job of ``tier``; the ticket is done when all are stored.

        Runs on the chunk task's thread, which does the per-item work (tokenising) here, beside the model.
        """
        ticket = Ticket(len(inputs), deadline)
        hooks.call("on_submit", self.spec, ticket)
        features = self.runtime.preprocess([value for _, value in inputs])
        lengths = self.runtime.lengths(features) or [None] * len(features)
        level = tiers.rank(tier)
        self.queue.put_many(
            Item(job_id, index, value, ticket, features=f, length=n, tier=level)
            for (index, value), f, n in zip(inputs, features, lengths)
        )
        return ticket

    @property
    def alive(self) -> bool:
        return self.death is None

    def wait(self, ticket: Ticket) -> None:
        """Wait until the ticket's items are stored, or raise :class:`BatcherStopped` once the batcher is dead."""
        while not ticket.wait(WAIT_SLICE_S):
            if self.death is not None:
                raise BatcherStopped(f"the batcher of {self.spec.name} died: {self.death!r}")

    def stop(self, deadline: float | None = None) -> bool:
        """Finish what is queued, then end the threads, by ``deadline`` (``time.monotonic()``; 30 s from now by
        default); True when they all ended. The runtime is closed only once the thread that runs it has exited: a batch still running
        past the deadline keeps its model, and dies with the process."""
        deadline = time.monotonic() + 30.0 if deadline is None else deadline
        self.queue.close()
        if self.death is not None:
            deadline = time.monotonic()  # its other stages wait on the dead one for ever: nothing to drain
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        drained = not any(thread.is_alive() for thread in self._threads)
        if not self._threads[1].is_alive():
            self.runtime.close()
        else:
            log.warning("batcher %s: a batch was still running at the shutdown deadline", self.spec.name)
        return drained

    def _guard(self, loop: Any) -> None:
        try:
            loop()
        except BaseException as exc:
            log.exception("batcher %s: its %s stage died; the worker is no longer healthy", self.spec.name, loop.__name__.strip("_"))
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        """Take no more items, release every waiting chunk, and tell the worker."""
        if self.death is not None:
            return
        self.death = exc
        self.queue.close()
        self.queue.clear()
        if self.on_death is not None:
            self.on_death(self, exc)

    def _collect_loop(self) -> None:
        while (items := self._take()) is not None:
            items = self._drop_unrunnable(items)
            if not items:
                continue
            try:
                hooks.call("before_batch", self.spec, items)
                prepared = self.runtime.prepare([item.features for item in items])
                shape = self._shape(items, prepared)
            except Exception as exc:
                self._ran.put((items, [as_error(exc)] * len(items)))
                continue
            hooks.call("after_prepare", self.spec, items, shape, reverse=True)
            self._prepared.put((items, prepared))
        self._prepared.put(_STOP)

    def _take(self) -> list[Item] | None:
        spec = self.spec
        return self.queue.take(
            lambda: self.batch_size.current,
            spec.max_wait_ms / 1000,
            max_tokens=spec.max_batch_tokens,
            by_length=spec.bucket_by_length,
        )

    def _shape(self, items: Sequence[Item], prepared: Any) -> hooks.BatchShape:
        counts = self.runtime.token_counts(prepared)
        tokens, padded = counts if counts else (None, None)
        return hooks.BatchShape(len(items), self.spec.max_batch_size, tokens, padded)

    def _drop_unrunnable(self, items: list[Item]) -> list[Item]:
        """Items whose job was cancelled, or whose deadline passed, while they waited go straight to the writer."""
        now = time.time()
        kept, dropped, errors = [], [], []
        for item in items:
            error = _CANCELLED if item.job_id in self.cancelled else _EXPIRED if _expired(item, now) else None
            if error is None:
                kept.append(item)
            else:
                dropped.append(item)
                errors.append(error)
        if dropped:
            self._ran.put((dropped, errors))
        return kept

    def _run_loop(self) -> None:
        while (work := self._prepared.get()) is not _STOP:
            items, prepared = work
            if self._outranked(items):
                self.queue.put_back(items)
                continue
            started = time.perf_counter()
            results = self._run(items, prepared)
            hooks.call("after_batch", self.spec, items, results, time.perf_counter() - started, reverse=True)
            self.batches_run += 1
            self._ran.put((items, results))
        self._ran.put(_STOP)

    def _outranked(self, items: Sequence[Item]) -> bool:
        """A higher tier than any in this prepared batch came while it waited: it goes back, and the next
        batch is formed with the newcomer, so no item waits behind more than the batch already running."""
        waiting = self.queue.highest_waiting()
        return waiting is not None and waiting < min(item.tier for item in items)

    def _run(self, items: Sequence[Item], prepared: Any) -> Sequence[Any]:
        """Outputs or errors, one per item: transient failures retried, a failing batch bisected."""
        runtime = self.runtime
        return run_isolated(
            lambda features: self._infer(runtime.prepare(features), len(features)),
            [item.features for item in items],
            self.retry,
            prepared_run=lambda: self._infer(prepared, len(items)),
        )

    def _infer(self, prepared: Any, size: int) -> Sequence[Any]:
        try:
            return self.runtime.infer(prepared)
        except DeviceOutOfMemory:
            self.batch_size.out_of_memory(size)
            raise

    def _write_loop(self) -> None:
        while (work := self._ran.get()) is not _STOP:
            items, results = work
            started = time.perf_counter()
            self._write(items, results)
            hooks.call("after_write", self.spec, items, time.perf_counter() - started, reverse=True)

    def _write(self, items: Sequence[Item], results: Sequence[Any]) -> None:
        records, results = zip(*(_encoded(item, r) for item, r in zip(items, results)))
        letters = self._dead_letters(items, results)
        try:
            self.store.record(records, also=lambda pipe: self.dead_letters.add(pipe, letters))
        except Exception as exc:
            log.error("model %s: could not store a batch of %d: %s", self.spec.name, len(items), exc)
            for item in items:
                item.ticket.abort(exc)
            return
        hooks.call("after_store", self.spec, items, results, reverse=True)
        _settle(items, records)

    def _dead_letters(self, items: Sequence[Item], results: Sequence[Any]) -> list[DeadLetter]:
        return [
            DeadLetter(item.job_id, item.index, self.spec.key, item.input, r.as_dict(), self.retry.attempts)
            for item, r in zip(items, results)
            if is_dead_letter(r)
        ]


def _encoded(item: Item, result: Any) -> tuple[ItemResult, Any]:
    """The item's record and its result: an output that cannot be stored (a value JSON cannot hold, say)
    becomes that item's error instead of killing the writer."""
    if not isinstance(result, BatcheryError):
        try:
            return ItemResult(item.job_id, item.index, encode_output(result), True), result
        except Exception as exc:
            result = ModelError(f"the model's output could not be stored: {type(exc).__name__}: {exc}")
    return ItemResult(item.job_id, item.index, encode_error(result), False), result


def _expired(item: Item, now: float) -> bool:
    return item.ticket.deadline is not None and now > item.ticket.deadline


def _settle(items: Sequence[Item], records: Sequence[ItemResult]) -> None:
    counts: dict[int, tuple[Ticket, int, int]] = {}
    for item, record in zip(items, records):
        ticket, ok, failed = counts.get(id(item.ticket), (item.ticket, 0, 0))
        counts[id(item.ticket)] = (ticket, ok + record.ok, failed + (not record.ok))
    for ticket, ok, failed in counts.values():
        ticket.settle(ok, failed)

