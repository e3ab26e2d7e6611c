"""The batch hook with a real batcher and the real job store: one span per batch, linked to every chunk whose
items it held, whichever jobs and traces those chunks belong to."""

from __future__ import annotations

import random
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_OFF, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from batchery.batching import Batcher, add_hook, remove_hook
from batchery.models.registry import ModelSpec
from batchery.runtimes.echo import EchoRuntime
from batchery.tracing.batches import TraceHook
from batchery.tracing.sampling import BatchSampler
from tests.helpers import new_job
from tests.tracing.conftest import Span


@pytest.fixture
def traced():
    """A tracer whose own spans are sampled only when their parent is (as ``parentbased_always_off`` would),
    so that a chunk span made as a root is recorded only when the test asks for it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=BatchSampler(ParentBased(DEFAULT_OFF)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hook = add_hook(TraceHook(provider.get_tracer("test")))
    yield provider.get_tracer("test"), exporter
    remove_hook(hook)
    provider.shutdown()


def sampled_root(tracer, name):
    """A chunk's span in a trace of its own, sampled: a parent whose context says so, as a propagated one would."""
    parent = SpanContext(random.getrandbits(128), random.getrandbits(64), True, TraceFlags(TraceFlags.SAMPLED))
    return tracer.start_as_current_span(name, context=set_span_in_context(NonRecordingSpan(parent)))


def echo(**options) -> EchoRuntime:
    return EchoRuntime(ModelSpec("t", "echo", max_batch_size=16, max_wait_ms=50, options=options), "cpu")


def test_a_batch_of_several_jobs_is_one_span_linking_each_chunk_it_served(store, traced):
    tracer, exporter = traced
    batcher = Batcher(echo(batch_latency_ms=30), store).start()
    jobs = [new_job(store, 4) for _ in range(3)]
    barrier = threading.Barrier(3)
    chunk_ids: dict[str, str] = {}

    def chunk(job_id: str) -> None:
        with sampled_root(tracer, "chunk") as span:
            chunk_ids[job_id] = f"0x{span.get_span_context().span_id:016x}"
            barrier.wait()
            ticket = batcher.submit(job_id, [(i, f"{job_id}:{i}") for i in range(4)])
            assert ticket.wait(10)

    threads = [threading.Thread(target=chunk, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()

    spans = [Span.of(s) for s in exporter.get_finished_spans()]
    batches = [s for s in spans if s.name == "batchery.batch"]
    assert sum(s.attributes["batchery.batch.size"] for s in batches) == 12
    mixed = max(batches, key=lambda s: s.attributes["batchery.batch.jobs"])
    assert mixed.attributes["batchery.batch.jobs"] >= 2, "the batcher merged chunks of several jobs"
    for batch in batches:
        assert batch.parent is None and batch.trace not in {s.trace for s in spans if s.name == "chunk"}
        for trace, span_id, attributes in batch.links:
            assert chunk_ids[attributes["batchery.job_id"]] == span_id, "each link is to its own chunk's span"
        assert sum(a["batchery.items"] for *_, a in batch.links) == batch.attributes["batchery.batch.size"]
        (record,) = [s for s in spans if s.parent == batch.id]
        assert record.name == "batchery.store.record" and batch.start <= record.start <= record.end == batch.end
        assert [name for name, _ in batch.events] == ["prepared", "run started", "run ended"]
        assert batch.start <= batch.events[0][1] <= batch.events[1][1] <= batch.events[2][1] <= record.start
        assert batch.attributes["batchery.batch.run_ms"] >= 30, "the model's 30 ms a batch"
    linked = {(a["batchery.job_id"], span_id) for b in batches for _, span_id, a in b.links}
    assert linked == set(chunk_ids.items())


def test_chunks_that_were_not_sampled_make_no_batch_span(store, traced):
    tracer, exporter = traced
    batcher = Batcher(echo(), store).start()
    job = new_job(store, 3)
    with tracer.start_as_current_span("chunk"):  # a root under parentbased_always_off: not sampled
        ticket = batcher.submit(job, [(i, i) for i in range(3)])
    assert ticket.wait(10) and ticket.context is None
    batcher.stop()
    assert exporter.get_finished_spans() == ()
