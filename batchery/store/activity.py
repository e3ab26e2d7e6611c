"""Each model's recent throughput and batch fill, summed over every worker, for the jobs page; and each model
version's recent item outcomes and latencies, for the canary watcher (:mod:`batchery.rollouts`).

Workers count into one Redis hash per model version and wall-clock second (:func:`batchery.keys.activity`),
which expires on its own (:class:`batchery.monitoring.activity.ActivityHook`); readers sum the last few seconds.
Prometheus has its own counters: these exist so that the page and the watcher need nothing but Redis, and see
every worker on every host at once.

Latencies are counted into buckets that grow by a quarter from 1 ms (:func:`latency_bucket`), so that a p95 over
any window and any number of workers is a sum of counts, read to within a quarter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import redis

from batchery import keys

#: The page shows rates over this many complete seconds unless asked for another window.
WINDOW_S = 10
MAX_WINDOW_S = 60
FIELDS = ("items", "batches", "batch_items", "batch_capacity")
#: Items that reached a model's outcome (an output or the model's error; not cancelled or past their deadline),
#: and those of them that ended with an error.
SERVED, ERRORS = "served", "errors"
#: Outcomes that are the job's doing, not the model's: left out of a version's error rate.
NOT_THE_MODELS = frozenset({"cancelled", "deadline_exceeded"})
LATENCY_BASE_S = 0.001
LATENCY_GROWTH = 1.25
LATENCY_BUCKETS = 60  # the last holds everything past 1 ms x 1.25**58, some seven minutes


def latency_bucket(seconds: float) -> int:
    """Bucket k holds latencies in (base x growth**(k-1), base x growth**k]; bucket 0 everything up to base."""
    if seconds <= LATENCY_BASE_S:
        return 0
    return min(LATENCY_BUCKETS - 1, math.ceil(math.log(seconds / LATENCY_BASE_S, LATENCY_GROWTH) - 1e-9))


def latency_field(bucket: int) -> str:
    return f"l{bucket}"


@dataclass(frozen=True)
class Outcomes:
    """One model version's items over a window: how many were served, how many failed, and their latencies."""

    served: int
    errors: int
    latencies: tuple[int, ...]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.served if self.served else None

    def quantile_s(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile of the latencies (None without any)."""
        total = sum(self.latencies)
        if not total:
            return None
        rank, seen = q * total, 0
        for bucket, count in enumerate(self.latencies):
            seen += count
            if seen >= rank:
                return LATENCY_BASE_S * LATENCY_GROWTH**bucket
        return LATENCY_BASE_S * LATENCY_GROWTH ** (LATENCY_BUCKETS - 1)

    def as_dict(self) -> dict[str, Any]:
        rate, p95 = self.error_rate, self.quantile_s(0.95)
        return {"served": self.served, "errors": self.errors, "error_rate": None if rate is None else round(rate, 4),
                "p95_s": None if p95 is None else round(p95, 4)}


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


def read_outcomes(
    client: redis.Redis, keys_: Sequence[str], window_s: int, now: float | None = None
) -> dict[str, Outcomes]:
    """Each model version's outcomes over the ``window_s`` complete seconds before now, in one round trip."""
    window_s = max(1, min(int(window_s), keys.ACTIVITY_TTL_S - 10))
    current = int(time.time() if now is None else now)
    pipe = client.pipeline(transaction=False)
    for key in keys_:
        for second in range(current - window_s, current):
            pipe.hgetall(keys.activity(key, second))
    values = pipe.execute()
    found = {}
    for i, key in enumerate(keys_):
        served = errors = 0
        latencies = [0] * LATENCY_BUCKETS
        for bucket in values[i * window_s : (i + 1) * window_s]:
            fields = {k.decode(): int(v) for k, v in bucket.items()}
            served += fields.get(SERVED, 0)
            errors += fields.get(ERRORS, 0)
            for k in range(LATENCY_BUCKETS):
                latencies[k] += fields.get(latency_field(k), 0)
        found[key] = Outcomes(served, errors, tuple(latencies))
    return found
