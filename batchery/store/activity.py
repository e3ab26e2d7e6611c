"""Each model's recent throughput and batch fill, summed over every worker, for the jobs page.

Workers count into one Redis hash per model and wall-clock second (:func:`batchery.keys.activity`), which
expires on its own (:class:`batchery.monitoring.activity.ActivityHook`); the API sums the last few seconds.
Prometheus has its own counters: these exist so that the page needs nothing but Redis, and sees every worker
on every host at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import redis

from batchery import keys

#: The page shows rates over this many complete seconds unless asked for another window.
WINDOW_S = 10
MAX_WINDOW_S = 60
FIELDS = ("items", "batches", "batch_items", "batch_capacity")


@dataclass(frozen=True)
class Activity:
    """One model's rates over ``window_s`` complete seconds; ``series`` is items per second, oldest first."""

    window_s: int
    items: int
    batches: int
    batch_items: int
    batch_capacity: int
    series: tuple[int, ...]

    @property
    def items_per_s(self) -> float:
        return self.items / self.window_s

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.window_s

    @property
    def batch_fill(self) -> float | None:
        """Items per batch against ``max_batch_size``, over every batch in the window; None without batches."""
        return self.batch_items / self.batch_capacity if self.batch_capacity else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "items_per_s": round(self.items_per_s, 2),
            "batches_per_s": round(self.batches_per_s, 2),
            "batch_fill": None if self.batch_fill is None else round(self.batch_fill, 4),
            "series": list(self.series),
        }


def read_activity(
    client: redis.Redis, models: Sequence[str], window_s: int = WINDOW_S, now: float | None = None
) -> dict[str, Activity]:
    """Every model's activity over the ``window_s`` seconds before the current one, in one round trip.

    The current second is left out because workers are still counting into it.
    """
    window_s = max(1, min(window_s, MAX_WINDOW_S))
    current = int(time.time() if now is None else now)
    seconds = range(current - window_s, current)
    pipe = client.pipeline(transaction=False)
    for model in models:
        for second in seconds:
            pipe.hmget(keys.activity(model, second), FIELDS)
    values = pipe.execute()
    found = {}
    for i, model in enumerate(models):
        buckets = [[int(v or 0) for v in bucket] for bucket in values[i * window_s : (i + 1) * window_s]]
        totals = [sum(column) for column in zip(*buckets)]
        found[model] = Activity(window_s, *totals, series=tuple(b[0] for b in buckets))
    return found
