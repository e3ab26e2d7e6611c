"""The workers' side of the jobs page's activity: a batch hook counting into Redis (:mod:`batchery.store.activity`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Sequence

import redis

from batchery import keys
from batchery.batching.hooks import BatchHook, BatchShape
from batchery.errors import BatcheryError
from batchery.store.activity import ERRORS, FIELDS, NOT_THE_MODELS, SERVED, latency_bucket, latency_field

_ENQUEUED_AT = attrgetter("enqueued_at")

if TYPE_CHECKING:
    from batchery.batching.queue import Item
    from batchery.models.registry import ModelSpec

log = logging.getLogger(__name__)

#: How often a worker's counts go to Redis: each batch only adds to them in memory.
FLUSH_S = 0.5


class ActivityHook(BatchHook):
    """Counts stored items, and the fill of each prepared batch, into each second's bucket; and per model
    version, the items served, those that failed, and how long each took from entering the batcher to its
    result being stored (what the canary watcher compares versions by).

    A batch's shape is known on the prepare thread and its end on the writer thread. Counts gather in memory,
    per model and second, and go to Redis in one pipelined round trip at most every :data:`FLUSH_S` (on the
    writer thread when a batch ends, or on the hook's own thread when the model goes quiet): a round trip per
    batch cost more than an echo batch itself. Activity is for the jobs page; a flush Redis refuses is dropped.
    """

    def __init__(
        self, client: redis.Redis, clock: Callable[[], float] = time.time, flush_s: float = FLUSH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.clock = clock
        #: The batcher queue's clock, which items carry their arrival in.
        self.monotonic = monotonic
        self.flush_s = flush_s
        self._shapes: dict[str, list[int]] = {}
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._outcomes: dict[tuple[str, int], Counter[str]] = {}
        self._last_flush = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ActivityHook":
        self._thread = threading.Thread(target=self._loop, name="activity", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.flush_s * 4)
        self.flush()

    def after_prepare(self, spec: "ModelSpec", items: Sequence["Item"], shape: BatchShape) -> None:
        with self._lock:
            counts = self._shapes.setdefault(spec.key, [0, 0, 0])
            counts[0] += 1
            counts[1] += shape.items
            counts[2] += shape.capacity

    def after_write(self, spec: "ModelSpec", items: Sequence["Item"], seconds: float) -> None:
        now = self.clock()
        with self._lock:
            batches, batch_items, capacity = self._shapes.pop(spec.key, (0, 0, 0))
            bucket = self._pending.setdefault((spec.key, int(now)), [0, 0, 0, 0])
            bucket[0] += len(items)
            bucket[1] += batches
            bucket[2] += batch_items
            bucket[3] += capacity
            due = now - self._last_flush >= self.flush_s
        if due:
            self.flush()

    def after_store(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any]) -> None:
        """Latencies are bucketed once per run of items that arrived together (a chunk's items do)."""
        now, ended = self.clock(), self.monotonic()
        errors = 0
        if any(isinstance(result, BatcheryError) for result in results):
            arrivals: Counter[float] = Counter()
            for item, result in zip(items, results):
                if isinstance(result, BatcheryError):
                    if result.code in NOT_THE_MODELS:
                        continue
                    errors += 1
                arrivals[item.enqueued_at] += 1
        else:  # the common batch, every item served: counted in C
            arrivals = Counter(map(_ENQUEUED_AT, items))
        if not arrivals:
            return
        with self._lock:
            counts = self._outcomes.setdefault((spec.key, int(now)), Counter())
            counts[SERVED] += sum(arrivals.values())
            counts[ERRORS] += errors
            for enqueued_at, count in arrivals.items():
                counts[latency_field(latency_bucket(ended - enqueued_at))] += count

    def flush(self) -> None:
        """Send what was counted since the last flush, one pipelined round trip for every bucket."""
        with self._lock:
            pending, self._pending = self._pending, {}
            outcomes, self._outcomes = self._outcomes, {}
            self._last_flush = self.clock()
        if not pending and not outcomes:
            return
        pipe = self.client.pipeline(transaction=False)
        for (model, second), counts in pending.items():
            key = keys.activity(model, second)
            for name, count in zip(FIELDS, counts):
                if count:
                    pipe.hincrby(key, name, count)
            pipe.expire(key, keys.ACTIVITY_TTL_S)
        for (model, second), counter in outcomes.items():
            key = keys.activity(model, second)
            for name, count in counter.items():
                if count:
                    pipe.hincrby(key, name, count)
            pipe.expire(key, keys.ACTIVITY_TTL_S)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("activity counts dropped: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
