"""Per-version outcomes and latencies against the real Redis: what the hook writes and the canary watcher reads."""

from __future__ import annotations

import uuid

import pytest

from batchery.batching.queue import Item
from batchery.errors import Cancelled, DeadlineExceeded, TransientError
from batchery.models.registry import ModelSpec
from batchery.monitoring.activity import ActivityHook
from batchery.store.activity import read_outcomes

SECOND = 1_700_000_000


@pytest.fixture
def canary() -> ModelSpec:
    """A version of a model name of its own, so that no worker of the session counts into its buckets."""
    return ModelSpec(f"echo-outcomes-{uuid.uuid4().hex[:8]}", "echo", version="v2", primary=False)


def items(count: int, enqueued_at: float) -> list[Item]:
    return [Item("job", i, i, None, enqueued_at=enqueued_at) for i in range(count)]


def test_items_served_errors_and_latencies_are_counted_per_version(redis_client, canary):
    hook = ActivityHook(redis_client, clock=lambda: SECOND + 0.3, monotonic=lambda: 100.0)
    hook.after_store(canary, items(3, 99.99), ["a", "b", TransientError("down")])  # 10 ms each
    hook.after_store(canary, items(2, 99.0), [Cancelled(), DeadlineExceeded()])  # the job's doing: not counted
    hook.after_store(canary, items(1, 98.0), ["c"])  # 2 s
    hook.flush()
    found = read_outcomes(redis_client, [canary.key, canary.name], window_s=3, now=SECOND + 1.5)
    mine = found[canary.key]
    assert (mine.served, mine.errors) == (4, 1) and mine.error_rate == 0.25
    assert 0.01 <= mine.quantile_s(0.5) < 0.0125 and 2.0 <= mine.quantile_s(0.95) < 2.5
    assert found[canary.name].served == 0, "the primary's key is another's"
    assert read_outcomes(redis_client, [canary.key], window_s=3, now=SECOND + 0.5)[canary.key].served == 0, (
        "the second being counted is left out"
    )
