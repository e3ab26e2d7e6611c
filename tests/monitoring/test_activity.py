"""Activity buckets against the real Redis: what a worker's hook writes and what the page reads back."""

from __future__ import annotations

import time
import uuid

import pytest

from batchery import keys
from batchery.batching.hooks import BatchShape
from batchery.models.registry import ModelSpec
from batchery.monitoring.activity import ActivityHook
from batchery.store.activity import read_activity

SECOND = 1_700_000_000


@pytest.fixture
def spec() -> ModelSpec:
    """A model name of its own, so that no worker of the session counts into its buckets."""
    return ModelSpec(f"echo-activity-{uuid.uuid4().hex[:8]}", "echo", max_batch_size=8)


def test_a_written_batch_lands_in_its_seconds_bucket_with_its_fill(redis_client, spec):
    hook = ActivityHook(redis_client, clock=lambda: SECOND + 0.7)
    hook.after_prepare(spec, [], BatchShape(items=8, capacity=8))
    hook.after_prepare(spec, [], BatchShape(items=4, capacity=8))
    hook.after_write(spec, [object()] * 12, 0.001)
    hook.flush()
    bucket = redis_client.hgetall(keys.activity(spec.name, SECOND))
    assert {k.decode(): int(v) for k, v in bucket.items()} == {
        "items": 12, "batches": 2, "batch_items": 12, "batch_capacity": 16,
    }
    assert 0 < redis_client.ttl(keys.activity(spec.name, SECOND)) <= keys.ACTIVITY_TTL_S


def test_a_write_without_a_prepared_batch_counts_items_only(redis_client, spec):
    """Items dropped before the model (cancelled, past their deadline) are stored without a batch."""
    hook = ActivityHook(redis_client, clock=lambda: SECOND)
    hook.after_write(spec, [object()] * 3, 0.001)
    hook.flush()
    bucket = redis_client.hgetall(keys.activity(spec.name, SECOND))
    assert {k.decode(): int(v) for k, v in bucket.items()} == {"items": 3}


def test_rates_sum_the_complete_seconds_of_the_window(redis_client, spec):
    clock = [SECOND - 3.5]
    hook = ActivityHook(redis_client, clock=lambda: clock[0])
    for at, items in ((SECOND - 3.5, 8), (SECOND - 1.2, 6), (SECOND + 0.1, 100)):
        clock[0] = at
        hook.after_prepare(spec, [], BatchShape(items=items, capacity=8))
        hook.after_write(spec, [object()] * items, 0.001)
    hook.flush()
    other = ModelSpec(spec.name + "-other", "echo")
    found = read_activity(redis_client, [spec.name, other.name], window_s=5, now=SECOND + 0.5)
    activity = found[spec.name]
    assert activity.series == (0, 8, 0, 6, 0)  # the current second (100 items) is still being counted
    assert activity.items_per_s == pytest.approx(14 / 5)
    assert activity.batches_per_s == pytest.approx(2 / 5)
    assert activity.batch_fill == pytest.approx(14 / 16)
    assert found[other.name].items_per_s == 0 and found[other.name].batch_fill is None


def test_the_window_is_bounded(redis_client, spec):
    assert read_activity(redis_client, [spec.name], window_s=10_000, now=SECOND)[spec.name].window_s == 60


def test_batches_are_counted_in_memory_and_sent_once_a_flush_period(redis_client, spec):
    clock = [SECOND + 0.1]
    hook = ActivityHook(redis_client, clock=lambda: clock[0], flush_s=0.5)
    for at in (SECOND + 0.1, SECOND + 0.2, SECOND + 0.3):
        clock[0] = at
        hook.after_write(spec, [object()] * 4, 0.001)
    assert not redis_client.exists(keys.activity(spec.name, SECOND)), "not a round trip per batch"
    clock[0] = SECOND + 0.7
    hook.after_write(spec, [object()] * 4, 0.001)
    assert int(redis_client.hget(keys.activity(spec.name, SECOND), "items")) == 16


def test_a_quiet_model_counts_are_sent_by_the_hooks_own_thread(redis_client, spec):
    hook = ActivityHook(redis_client, flush_s=0.05).start()
    try:
        hook.after_write(spec, [object()] * 5, 0.001)
        deadline = time.monotonic() + 2
        while not redis_client.keys(keys.activity(spec.name, "*")):
            assert time.monotonic() < deadline, "the counts never left memory"
            time.sleep(0.01)
    finally:
        hook.stop()
