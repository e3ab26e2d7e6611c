"""The workers' side of the jobs page's activity: a batch hook counting into Redis (:mod:`batchery.store.activity`)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence

import redis

from batchery import keys
from batchery.batching.hooks import BatchHook, BatchShape

if TYPE_CHECKING:
    from batchery.batching.queue import Item
    from batchery.models.registry import ModelSpec

class ActivityHook(BatchHook):
    """Counts stored items, and the fill of each prepared batch, into the current second's bucket.

    A batch's shape is known on the prepare thread and its end on the writer thread; the shape waits in
    memory until the next write, so each batch costs one pipelined round trip, made by the thread that is
    talking to Redis anyway.
    """

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self._shapes: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def after_prepare(self, spec: "ModelSpec", items: Sequence["Item"], shape: BatchShape) -> None:
        with self._lock:
            counts = self._shapes.setdefault(spec.name, [0, 0, 0])
            counts[0] += 1
            counts[1] += shape.items
            counts[2] += shape.capacity

    def after_write(self, spec: "ModelSpec", items: Sequence["Item"], seconds: float) -> None:
        with self._lock:
            batches, batch_items, capacity = self._shapes.pop(spec.name, (0, 0, 0))
        key = keys.activity(spec.name, int(self.clock()))
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, "items", len(items))
        if batches:
            pipe.hincrby(key, "batches", batches)
            pipe.hincrby(key, "batch_items", batch_items)
            pipe.hincrby(key, "batch_capacity", capacity)
        pipe.expire(key, keys.ACTIVITY_TTL_S)
        pipe.execute()
