"""The worker's batch metrics hook on a real batcher and the real job store, read from the process registry."""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from batchery.batching import Batcher, add_hook, remove_hook
from batchery.models.registry import ModelSpec
from batchery.monitoring.batch_metrics import BatchMetrics
from batchery.monitoring.metrics import observe_many
from batchery.runtimes.base import Runtime
from batchery.runtimes.echo import EchoRuntime
from tests.helpers import new_job


class SyntheticTokens(Runtime):
    """Synthetic: an input ``n`` is a text of ``n`` tokens; batches are padded to their longest, like a tokenizer."""

    def prepare(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        longest = max(inputs)
        return {"attention_mask": np.array([[1] * n + [0] * (longest - n) for n in inputs])}

    def run(self, prepared: dict[str, np.ndarray]) -> Sequence[Any]:
        return [int(row.sum()) for row in prepared["attention_mask"]]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def hook():
    hook = add_hook(BatchMetrics())
    yield hook
    remove_hook(hook)



def test_padding_tokens_fill_and_sizes_of_each_batch(store, hook):
    model = f"synthetic-tokens-{uuid.uuid4().hex[:8]}"
    batcher = Batcher(
        SyntheticTokens(ModelSpec(model, "synthetic", max_batch_size=4, max_wait_ms=20), "cpu"), store
    ).start()
    lengths = [1, 2, 3, 6, 5, 5]  # batches [1, 2, 3, 6] (24 positions, 12 real) and [5, 5] (10 positions, all real)
    assert batcher.submit(new_job(store, 6), list(enumerate(lengths))).wait(10)
    batcher.stop()
    assert sample("batchery_tokens_total", model=model, kind="real") == sum(lengths) == 22
    assert sample("batchery_tokens_total", model=model, kind="padding") == 12
    assert sample("batchery_batch_padding_ratio_count", model=model) == 2
    assert sample("batchery_batch_padding_ratio_sum", model=model) == pytest.approx(0.5 + 0.0)
    assert sample("batchery_batch_fill_ratio_sum", model=model) == pytest.approx(1.0 + 0.5)
    assert sample("batchery_batch_size_count", model=model) == batcher.batches_run == 2
    assert sample("batchery_batch_size_sum", model=model) == 6
    assert sample("batchery_items_processed_total", model=model, outcome="succeeded") == 6
    assert sample("batchery_queue_wait_seconds_count", model=model, stage="batcher", tier="standard") == 6


def test_items_dropped_while_waiting_count_under_their_error_code(store, hook):
    model = f"echo-{uuid.uuid4().hex[:8]}"
    cancelled: set[str] = set()
    runtime = EchoRuntime(
        ModelSpec(model, "echo", max_batch_size=4, max_wait_ms=1, options={"batch_latency_ms": 30}), "cpu"
    )
    batcher = Batcher(runtime, store, cancelled).start()
    keep, drop = new_job(store, 12), new_job(store, 12)
    first = batcher.submit(keep, [(i, i) for i in range(12)])
    second = batcher.submit(drop, [(i, i) for i in range(12)])
    cancelled.add(drop)
    assert first.wait(10) and second.wait(10)
    batcher.stop()
    assert sample("batchery_items_processed_total", model=model, outcome="succeeded") == 12 + second.succeeded
    assert sample("batchery_items_processed_total", model=model, outcome="cancelled") == second.failed >= 8
    assert sample("batchery_batch_size_sum", model=model) == 12 + second.succeeded, "dropped items never ran"
    assert sample("batchery_dead_letters_total", model=model) == 0, "a cancellation is no dead letter"


def test_observing_a_run_of_equal_waits_at_once_is_observing_each():
    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "", ["m"], buckets=(0.01, 0.1, 1.0), registry=registry).labels("a")
    at_once = Histogram("at_once", "", ["m"], buckets=(0.01, 0.1, 1.0), registry=registry).labels("a")
    for amount, count in [(0.0, 3), (0.01, 2), (0.05, 7), (0.1, 1), (5.0, 4)]:
        for _ in range(count):
            one_by_one.observe(amount)
        observe_many(at_once, amount, count)
    for bound in ("0.01", "0.1", "1.0", "+Inf"):
        expected = registry.get_sample_value("one_by_one_bucket", {"m": "a", "le": bound})
        assert registry.get_sample_value("at_once_bucket", {"m": "a", "le": bound}) == expected
    assert registry.get_sample_value("at_once_sum", {"m": "a"}) == pytest.approx(
        registry.get_sample_value("one_by_one_sum", {"m": "a"})
    )
    assert registry.get_sample_value("at_once_count", {"m": "a"}) == 17
