"""The trace context across the broker: into a chunk's record, into its message's headers, out in the worker."""

from __future__ import annotations

import orjson

from batchery import tracing
from tests.tracing.conftest import Span


def test_off_the_record_context_passes_through_the_headers_unchanged():
    headers = {"sent_at": 1.0}
    with tracing.sending("", headers, "j", 0, "q", "t"):
        pass
    assert headers == {"sent_at": 1.0}
    kept = orjson.dumps({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}).decode()
    with tracing.sending(kept, headers, "j", 0, "q", "t"):
        pass
    assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.chunk_span(headers, "j", 0, "q", "t") as span:
        assert span is None


def test_a_send_continues_the_recorded_context_and_the_chunk_continues_the_send(memory_tracing):
    with tracing.span("batchery.enqueue") as enqueue:
        kept = tracing.carrier()
    assert orjson.loads(kept)["traceparent"].split("-")[2] == f"{enqueue.get_span_context().span_id:016x}"
    headers: dict = {"sent_at": 1_700_000_000.5}
    with tracing.sending(
        kept, headers, "job", 3, "batchery.echo.standard", "job.3"
    ):  # elsewhere, later: no current span
        pass
    with tracing.chunk_span(headers, "job", 3, "batchery.echo.standard", "job.3") as chunk:
        inner = tracing.carrier()
    spans = {s.name: s for s in map(Span.of, memory_tracing.get_finished_spans())}
    send, queued, task = spans["batchery.chunk.send"], spans["batchery.chunk.queued"], spans["batchery.chunk"]
    assert (send.kind, send.parent, send.trace) == (
        "PRODUCER",
        spans["batchery.enqueue"].id,
        spans["batchery.enqueue"].trace,
    )
    assert headers["traceparent"].split("-")[1:3] == [send.trace[2:], send.id[2:]]
    assert (task.kind, task.parent, queued.parent) == ("CONSUMER", send.id, send.id)
    assert queued.start.startswith("2023-11-14T22:13:20.5"), "the broker span starts when the message was sent"
    assert task.attributes == {
        "batchery.job_id": "job",
        "batchery.chunk": 3,
        "messaging.system": "celery",
        "messaging.operation.type": "process",
        "messaging.destination.name": "batchery.echo.standard",
        "messaging.message.id": "job.3",
    }
    assert orjson.loads(inner)["traceparent"].split("-")[2] == f"{chunk.get_span_context().span_id:016x}", (
        "the chunk's span is current while its task runs"
    )


def test_a_chunk_with_no_recorded_context_starts_a_trace_of_its_own(memory_tracing):
    """A worker finishing some job's chunk releases a chunk of an untraced job: its send is no child of that."""
    headers: dict = {}
    with tracing.span("batchery.chunk"):
        with tracing.sending("", headers, "other", 0, "q", "other.0"):
            pass
    spans = {s.name: s for s in map(Span.of, memory_tracing.get_finished_spans())}
    send = spans["batchery.chunk.send"]
    assert send.parent is None and send.trace != spans["batchery.chunk"].trace
    assert headers["traceparent"].split("-")[2] == send.id[2:]
