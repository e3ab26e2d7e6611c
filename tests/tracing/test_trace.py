"""One job's trace, end to end: the API in this process (its spans in memory), a real `batchery worker` in
another (its spans in a trace file and, through the OTLP exporter its environment configures, at a collector),
real Redis and a real broker in between.

The job's chunks go out in several ways: the first by the API, within the request; the rest, held back by
their lane's budget of one chunk in flight, by the worker as each chunk finishes. Every one of them must
still be a child of the request's enqueue span, and each chunk task a child of its own send.
"""

from __future__ import annotations

import dataclasses
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from batchery.app import create_app
from tests.conftest import WorkerProcess
from tests.tracing.conftest import Span, read_spans

pytestmark = pytest.mark.slow

MODELS = textwrap.dedent(
    """
    [models.echo-trace]
    runtime = "echo"
    input = "json"
    max_batch_size = 4
    max_wait_ms = 20
    description = "synthetic: served only by the tracing test's worker"
    [models.echo-trace.options]
    batch_latency_ms = 5
    """
)
ITEMS = 10
CHUNK = 3
CHUNKS = 4


def wait_for(found: callable, timeout_s: float = 30.0, what: str = "spans") -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s}s"
        time.sleep(0.1)


@pytest.fixture
def traced_settings(settings, tmp_path: Path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    return dataclasses.replace(settings, models_file=str(models), chunk_size=CHUNK, chunks_in_flight_per_worker=1)


def test_one_jobs_trace_crosses_the_broker_and_its_batches_link_its_chunks(
    traced_settings, memory_tracing, otlp_sink, tmp_path
):
    one_jobs_trace(traced_settings, memory_tracing, otlp_sink, tmp_path)


def test_the_trace_crosses_an_amqp_broker_too(traced_settings, amqp_url, memory_tracing, otlp_sink, tmp_path):
    """RabbitMQ carries the headers as AMQP message headers, not in a JSON envelope: the same trace comes out."""
    one_jobs_trace(dataclasses.replace(traced_settings, broker_url=amqp_url), memory_tracing, otlp_sink, tmp_path)


def one_jobs_trace(traced_settings, memory_tracing, otlp_sink, tmp_path: Path) -> None:
    trace_file = tmp_path / "worker-spans.jsonl"
    env = {
        "BATCHERY_TRACE_FILE": str(trace_file),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    worker = WorkerProcess(
        traced_settings, ["echo-trace"], f"trace-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log", env
    )
    worker.start()
    try:
        client = create_app(traced_settings).test_client()
        inputs = [f"trace-{uuid.uuid4().hex}-{i}" for i in range(ITEMS)]
        answer = client.post("/v1/jobs", json={"model": "echo-trace", "inputs": inputs, "cache": False})
        assert answer.status_code == 202, answer.text
        job_id = answer.json["id"]
        store = traced_settings.job_store()
        assert store.wait_done(job_id, 60), store.get(job_id)
        assert store.get(job_id)["succeeded"] == ITEMS

        def complete() -> bool:
            spans = read_spans(trace_file)
            chunks = {
                s.attributes["batchery.chunk"]
                for s in spans
                if s.name == "batchery.chunk" and s.attributes["batchery.job_id"] == job_id
            }
            linked = sum(
                a["batchery.items"]
                for s in spans
                if s.name == "batchery.batch"
                for _, _, a in s.links
                if a["batchery.job_id"] == job_id
            )
            return chunks == set(range(CHUNKS)) and linked == ITEMS

        wait_for(complete)
        api_side = [Span.of(s) for s in memory_tracing.get_finished_spans()]
    finally:
        worker.stop()
    worker_spans = read_spans(trace_file)

    (request,) = [s for s in api_side if s.name == "POST /v1/jobs"]
    assert request.kind == "SERVER" and request.parent is None
    assert request.attributes["http.route"] == "/v1/jobs" and request.attributes["http.response.status_code"] == 202
    (enqueue,) = [s for s in api_side if s.name == "batchery.enqueue"]
    assert (enqueue.trace, enqueue.parent, enqueue.attributes["batchery.job_id"]) == (request.trace, request.id, job_id)

    ours = [s for s in api_side + worker_spans if s.attributes.get("batchery.job_id") == job_id]
    assert {s.trace for s in ours} == {request.trace}, "API and worker spans of the job share one trace"

    sends = [s for s in ours if s.name == "batchery.chunk.send"]
    assert sorted(s.attributes["batchery.chunk"] for s in sends) == list(range(CHUNKS))
    assert all(s.kind == "PRODUCER" and s.parent == enqueue.id for s in sends), "each send a child of the enqueue"
    sent_by = Counter("api" if s in api_side else s.service for s in sends)
    assert sent_by == {"api": 1, "batchery-worker": CHUNKS - 1}, "one chunk in flight: the worker released the rest"

    send_of = {s.attributes["batchery.chunk"]: s for s in sends}
    chunks = {s.attributes["batchery.chunk"]: s for s in ours if s.name == "batchery.chunk"}
    queued = {s.attributes["batchery.chunk"]: s for s in ours if s.name == "batchery.chunk.queued"}
    assert sorted(chunks) == sorted(queued) == list(range(CHUNKS))
    for number, chunk in chunks.items():
        assert chunk.kind == "CONSUMER" and chunk.parent == send_of[number].id, "the task continues its own send"
        assert queued[number].parent == send_of[number].id and queued[number].end <= chunk.start
        assert chunk.service == "batchery-worker"

    batches = [
        s
        for s in worker_spans
        if s.name == "batchery.batch" and any(a["batchery.job_id"] == job_id for *_, a in s.links)
    ]
    chunk_ids = {s.id for s in chunks.values()}
    linked: set[str] = set()
    for batch in batches:
        assert batch.parent is None and batch.trace != request.trace, (
            "a batch is a span of its own, not a chunk's child"
        )
        ours_linked = [(trace, span, a) for trace, span, a in batch.links if a["batchery.job_id"] == job_id]
        assert all(trace == request.trace and span in chunk_ids for trace, span, _ in ours_linked)
        assert sum(a["batchery.items"] for *_, a in batch.links) == batch.attributes["batchery.batch.size"] <= 4
        linked |= {span for _, span, _ in ours_linked}
        children = [s.name for s in worker_spans if s.parent == batch.id and s.trace == batch.trace]
        assert children == ["batchery.store.record"]
        assert [name for name, _ in batch.events] == ["prepared", "run started", "run ended"]
    assert linked == chunk_ids, "every chunk of the job is linked from a batch that served it"
    assert sum(a["batchery.items"] for b in batches for *_, a in b.links if a["batchery.job_id"] == job_id) == ITEMS

    received = otlp_sink.spans()
    assert set(otlp_sink.paths) == {"/v1/traces"}
    by_otlp = {span_id for service, _, span_id in received if service == "batchery-worker"}
    assert {s.id for s in worker_spans} <= by_otlp, "the OTLP exporter the environment configures sent them too"
