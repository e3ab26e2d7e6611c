"""The canary watcher: a version that does worse than its model's primary stops getting jobs.

One runs in every worker process, beside the janitor, since the workers are what always runs and what counts
the items (:class:`batchery.monitoring.activity.ActivityHook`, into Redis per version and second). Every
``BATCHERY_CANARY_CHECK_S`` it reads, for each model with a version other than the primary that has a weight,
that version's and the primary's items of the last ``BATCHERY_CANARY_WINDOW_S``. Once both served at least
``BATCHERY_CANARY_MIN_ITEMS`` there, it rolls the canary back (its weight to 0, in Redis, where every API process
reads it) when

- its error rate passes the primary's by more than ``BATCHERY_CANARY_ERROR_MARGIN`` (absolute: 0.05 is five
  points), or
- its p95 latency (an item's time from entering its worker's batcher to its result stored) passes the
  primary's by more than ``BATCHERY_CANARY_LATENCY_MARGIN`` (relative: 0.5 is half as long again) and by at
  least ``BATCHERY_CANARY_LATENCY_MIN_MS``: a canary with a fifth of the traffic fills its batches more slowly,
  and a few milliseconds of batching wait more is no regression.

Items already sent to the canary still run there, and end there with an output or an error, retried as any
item is. Several workers may decide the same at once; the weight is set to 0 atomically, and only the one that
set it logs the rollback, records it and counts it (``batchery_canary_rollbacks_total``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from batchery.models.registry import ModelSpec, Registry
from batchery.monitoring.metrics import CANARY_ROLLBACKS
from batchery.rollouts.weights import WeightStore
from batchery.settings import Settings
from batchery.store.activity import Outcomes, read_outcomes

log = logging.getLogger(__name__)
#: A check interval of 0 would spin: looking more often than this learns nothing new.
MIN_CHECK_S = 0.1


@dataclass(frozen=True)
class Verdict:
    reason: str  # errors | latency
    why: str


def judge(
    primary: Outcomes, canary: Outcomes, min_items: int, error_margin: float, latency_margin: float,
    latency_min_s: float = 0.0,
) -> Verdict | None:
    """Whether ``canary`` did worse than ``primary`` by more than the margins; None while either has fewer than
    ``min_items`` items, or when it did not."""
    if min(primary.served, canary.served) < max(min_items, 1):
        return None
    if canary.error_rate - primary.error_rate > error_margin:
        return Verdict("errors", f"error rate {canary.error_rate:.1%} against the primary's {primary.error_rate:.1%} "
                                 f"over {canary.served} and {primary.served} items (margin {error_margin:.1%})")
    mine, theirs = canary.quantile_s(0.95), primary.quantile_s(0.95)
    if mine > theirs * (1 + latency_margin) and mine - theirs >= latency_min_s:
        return Verdict("latency", f"p95 latency {mine * 1000:.1f} ms against the primary's {theirs * 1000:.1f} ms "
                                  f"(margin {latency_margin:.0%})")
    return None


class CanaryWatcher:
    def __init__(
        self, client: redis.Redis, registry: Registry, weights: WeightStore, settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.registry = registry
        self.weights = weights
        self.settings = settings
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="canary-watcher", daemon=True)

    def start(self) -> "CanaryWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(max(self.settings.canary_check_s, MIN_CHECK_S)):
            try:
                self.check()
            except redis.RedisError as exc:
                log.warning("canary watcher: could not look (%s); looking again soon", exc)
            except Exception:
                log.exception("canary watcher: a look failed")

    def check(self) -> list[tuple[str, str]]:
        """One look at every model's canaries; returns the ``(model, version)`` this call rolled back."""
        rolled = []
        for name in self.registry.names():
            for canary in self._canaries(name):
                if self._look(name, canary):
                    rolled.append((name, canary.version))
        return rolled

    def _canaries(self, name: str) -> list[ModelSpec]:
        versions = self.registry.versions(name)
        if len(versions) == 1:
            return []
        weights, _ = self.weights.current(name)
        return [v for v in versions[1:] if weights.get(v.version, 0) > 0]

    def _look(self, name: str, canary: ModelSpec) -> bool:
        primary = self.registry.get(name)
        s = self.settings
        found = read_outcomes(self.redis, [primary.key, canary.key], int(s.canary_window_s), self.clock())
        verdict = judge(found[primary.key], found[canary.key], s.canary_min_items, s.canary_error_margin,
                        s.canary_latency_margin, s.canary_latency_min_ms / 1000)
        if verdict is None or not self.weights.zero(name, canary.version):
            return False
        self.weights.record_rollback(name, canary.version, verdict.why, self.clock())
        CANARY_ROLLBACKS.labels(name, canary.version, verdict.reason).inc()
        log.warning("canary %s rolled back, its weight set to 0: %s", canary.ref, verdict.why)
        return True
