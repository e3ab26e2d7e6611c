"""Spans of batches, from the batch hooks (:mod:`batchery.batching.hooks`); installed only while tracing is on.

A batch serves items of many chunks and jobs, so it is one span of its own, a root with a link to the span of
every chunk it served (with how many of that chunk's items it held), never the child of one of them. It runs
from the moment the batch was formed to the end of its write; its stages are events on it (``prepared``: padded
and stacked; ``run started`` and ``run ended``: the model, retries and bisection included) and attributes
(``prepare_ms``, ``device_wait_ms``, ``run_ms``), and its write, the one Redis round trip that stores its
outputs, is its child span ``batchery.store.record``.

The three stages run on three threads, so the hook only notes times as a batch passes and makes the spans at
the end, on the writer's thread, with those times. A batch is sampled when any chunk it served is
(:class:`batchery.tracing.sampling.BatchSampler`); one that served none is never made into a span.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from batchery.batching.hooks import BatchHook, BatchShape
from batchery.errors import BatcheryError

if TYPE_CHECKING:
    from batchery.batching.queue import Item
    from batchery.batching.ticket import Ticket
    from batchery.models.registry import ModelSpec

#: Batches noted and not yet written past which the oldest notes are dropped (a batch put back for a higher
#: tier is never written as such: its items come again in another batch).
MAX_OPEN = 256


@dataclass
class _Batch:
    items: Sequence["Item"]
    formed_ns: int
    shape: BatchShape | None = None
    prepared_ns: int | None = None
    ran_ns: tuple[int, int] | None = None
    results: Sequence[Any] = ()
    stored: bool = False


class TraceHook(BatchHook):
    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._open: dict[int, _Batch] = {}
        self._lock = threading.Lock()  # the three stages' threads note and take batches

    def on_submit(self, spec: "ModelSpec", ticket: "Ticket") -> None:
        found = trace.get_current_span().get_span_context()
        if found.trace_flags.sampled:
            ticket.context = found

    def before_batch(self, spec: "ModelSpec", items: Sequence["Item"]) -> None:
        with self._lock:
            if len(self._open) >= MAX_OPEN:
                self._open.pop(next(iter(self._open)))
            self._open[id(items)] = _Batch(items, time.time_ns())

    def after_prepare(self, spec: "ModelSpec", items: Sequence["Item"], shape: BatchShape) -> None:
        batch = self._noted(items)
        if batch is not None:
            batch.prepared_ns, batch.shape = time.time_ns(), shape

    def after_batch(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any], seconds: float) -> None:
        batch = self._noted(items)
        if batch is not None:
            end = time.time_ns()
            batch.ran_ns, batch.results = (end - int(seconds * 1e9), end), results

    def after_store(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any]) -> None:
        batch = self._noted(items)
        if batch is not None:
            batch.stored = True

    def after_write(self, spec: "ModelSpec", items: Sequence["Item"], seconds: float) -> None:
        batch = self._noted(items)
        if batch is not None:
            with self._lock:
                self._open.pop(id(items), None)
        links = chunk_links(items)
        if not links:
            return
        end = time.time_ns()
        written = (end - int(seconds * 1e9), end)
        if batch is None:  # items that never reached the model (cancelled, past their deadline): the write alone
            self._span(None, "batchery.store.record", written, links=links)
        else:
            self._batch(spec, batch, links, written)

    def _batch(self, spec: "ModelSpec", batch: _Batch, links: list[Link], written: tuple[int, int]) -> None:
        """The batch's span, from when it was formed to the end of its write: its stages are events on it (a span
        each would cost as much again, for every batch), its write a child span."""
        root = self.tracer.start_span(
            "batchery.batch",
            context=otel_context.Context(),
            links=links,
            start_time=batch.formed_ns,
            attributes=_attributes(spec, batch, links),
        )
        if batch.prepared_ns is not None:
            root.add_event("prepared", timestamp=batch.prepared_ns)
        if batch.ran_ns is not None:
            root.add_event("run started", timestamp=batch.ran_ns[0])
            root.add_event("run ended", timestamp=batch.ran_ns[1])
        unstored = None if batch.stored else "the outputs could not be stored"
        self._span(trace.set_span_in_context(root), "batchery.store.record", written, error=unstored)
        if batch.ran_ns is None or unstored:
            root.set_status(Status(StatusCode.ERROR, "the batch did not run" if batch.ran_ns is None else unstored))
        root.end(written[1])

    def _noted(self, items: Sequence["Item"]) -> _Batch | None:
        with self._lock:
            batch = self._open.get(id(items))
        return batch if batch is not None and batch.items is items else None

    def _span(
        self, parent: Any, name: str, times: tuple[int, int], links: list[Link] | None = None, error: str | None = None
    ) -> None:
        span = self.tracer.start_span(name, context=parent or otel_context.Context(), links=links, start_time=times[0])
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(times[1])


def chunk_links(items: Sequence["Item"]) -> list[Link]:
    """One link per chunk whose items are in the batch, to that chunk's span, with its job and item count.

    A chunk's items sit side by side in a batch, so the chunk is looked up only when the ticket changes."""
    counts: dict[int, list[Any]] = {}
    last, found = None, None
    for item in items:
        if item.ticket is not last:
            last = item.ticket
            found = counts.get(id(last))
            if found is None:
                found = counts[id(last)] = [last.context, item.job_id, 0]
        found[2] += 1
    return [
        Link(context, {"batchery.job_id": job_id, "batchery.items": count})
        for context, job_id, count in counts.values()
        if context is not None
    ]


def _attributes(spec: "ModelSpec", batch: _Batch, links: list[Link]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "batchery.model": spec.ref,
        "batchery.batch.size": len(batch.items),
        "batchery.batch.chunks": len(links),
        "batchery.batch.jobs": len({link.attributes["batchery.job_id"] for link in links}),
        "batchery.batch.failed": sum(isinstance(r, BatcheryError) for r in batch.results),
    }
    if batch.prepared_ns is not None:
        found["batchery.batch.prepare_ms"] = round((batch.prepared_ns - batch.formed_ns) / 1e6, 3)
    if batch.ran_ns is not None:
        found["batchery.batch.run_ms"] = round((batch.ran_ns[1] - batch.ran_ns[0]) / 1e6, 3)
        if batch.prepared_ns is not None:
            found["batchery.batch.device_wait_ms"] = round((batch.ran_ns[0] - batch.prepared_ns) / 1e6, 3)
    if batch.shape is not None:
        found["batchery.batch.capacity"] = batch.shape.capacity
        if batch.shape.tokens is not None:
            found["batchery.batch.tokens"] = batch.shape.tokens
            found["batchery.batch.padded_tokens"] = batch.shape.padded_tokens
    return found
