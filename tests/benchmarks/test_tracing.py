"""The tracing benchmark: both sides computed every item, and the "on" side (the API under gunicorn and a
worker, configured by nothing but OTEL_* variables) exported every kind of span by OTLP to its collector."""

from __future__ import annotations

import json
import signal
from typing import Iterator

import pytest

from batchery.batching import hooks
from benchmarks import tracing


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The benchmark turns SIGTERM and SIGINT into exceptions, as a command should; the suite keeps its own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_rounds_rotate_so_each_side_goes_first_as_often():
    assert tracing.order(3) == ["off", "on", "sampled", "on", "sampled", "off", "sampled", "off", "on"]


def test_the_disabled_instrumentation_is_timed_with_the_worker_hooks_left_as_found():
    before = list(hooks._HOOKS)
    costs = tracing.disabled_costs()
    assert hooks._HOOKS == before
    assert costs["batch_ns"] == 0.0 and 0 < costs["chunk_ns"] < 100_000 and 0 < costs["job_ns"] < 100_000


@pytest.mark.slow
def test_one_round_each_side_exports_the_traced_sides_spans(tmp_path, signal_handlers):
    out = tmp_path / "tracing.json"
    assert tracing.main(["--rounds", "1", "--items", "600", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [len(s["runs_items_per_s"]) for s in report["sides"].values()] == [1, 1, 1]
    spans = report["spans_exported"]
    assert 2 <= spans["POST /v1/jobs"] == spans["batchery.enqueue"] <= 4, "the warm-up job and the timed one, each side"
    assert spans["batchery.chunk"] == spans["batchery.chunk.send"] == spans["batchery.chunk.queued"] >= 2
    assert spans["batchery.batch"] == spans["batchery.store.record"] >= 2
    assert 0 < report["disabled_share_of_item"] < 0.02
