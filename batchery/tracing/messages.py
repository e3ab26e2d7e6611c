"""A trace across the broker: the context travels in each chunk's Celery message headers, put there with
OpenTelemetry's propagator API (W3C ``traceparent`` by default, whatever ``OTEL_PROPAGATORS`` names).

A chunk is not always published by the request that made it: chunks held back in their lane are released
later by whichever worker finishes a chunk of that lane, and a lost chunk is sent again by a janitor. So the
enqueue span's context is kept with the chunk's record in Redis (:func:`carrier`, its ``trace`` field) and
every publish, wherever it happens, continues the chunk's own trace from there. A process that traces nothing
still passes that context on in the headers unchanged.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, ContextManager, Iterator, Mapping

import orjson

from batchery.tracing import setup

_NOTHING = contextlib.nullcontext()


def carrier() -> str:
    """The current context as a chunk record keeps it (the propagator's fields, as JSON); '' when tracing is off
    or nothing is being traced."""
    if not setup.active():
        return ""
    from opentelemetry import propagate

    fields: dict[str, str] = {}
    propagate.inject(fields)
    return orjson.dumps(fields).decode() if fields else ""


def sending(
    trace: str, headers: dict[str, Any], job_id: str, number: int, queue: str, task_id: str
) -> ContextManager[Any]:
    """Around one chunk's publish: a producer span, child of the chunk's enqueue span (``trace``, from its
    record), whose context goes into ``headers``. Off, ``trace`` goes into the headers as it is."""
    tracer = setup.tracer()
    if tracer is None:
        if trace:
            headers.update(orjson.loads(trace))
        return _NOTHING
    return _send_span(tracer, trace, headers, job_id, number, queue, task_id)


@contextlib.contextmanager
def _send_span(
    tracer: Any, trace: str, headers: dict[str, Any], job_id: str, number: int, queue: str, task_id: str
) -> Iterator[Any]:
    from opentelemetry import propagate
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    # a chunk sent for no traced request (a janitor's resend of an untraced job) starts a trace of its own, never
    # a child of whatever span the sending thread is in (a worker finishing some other job's chunk)
    parent = propagate.extract(orjson.loads(trace) if trace else {}, context=Context())
    attributes = _chunk_attributes(job_id, number, queue, task_id, "send")
    with tracer.start_as_current_span(
        "batchery.chunk.send", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        propagate.inject(headers)
        yield span


def chunk_span(
    headers: Mapping[str, Any] | None, job_id: str, number: int, queue: str, task_id: str
) -> ContextManager[Any]:
    """Around a chunk task in the worker: the time its message spent in the broker (from its ``sent_at``
    header to now) as one span, then the task itself as a consumer span, both children of the send."""
    tracer = setup.tracer()
    if tracer is None:
        return _NOTHING
    from opentelemetry import propagate
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    headers = headers or {}
    parent = propagate.extract(headers, context=Context())
    sent_at = headers.get("sent_at")
    attributes = _chunk_attributes(job_id, number, queue, task_id, "process")
    if isinstance(sent_at, (int, float)):
        now = time.time_ns()
        queued = tracer.start_span(
            "batchery.chunk.queued", context=parent, attributes=attributes, start_time=min(int(sent_at * 1e9), now)
        )
        queued.end(now)
    return tracer.start_as_current_span("batchery.chunk", context=parent, kind=SpanKind.CONSUMER, attributes=attributes)


def _chunk_attributes(job_id: str, number: int, queue: str, task_id: str, operation: str) -> dict[str, Any]:
    return {
        "batchery.job_id": job_id,
        "batchery.chunk": number,
        "messaging.system": "celery",
        "messaging.operation.type": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": task_id,
    }
