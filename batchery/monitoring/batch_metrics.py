"""The worker's batch metrics, taken from the batcher's hooks rather than from inside the batcher."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

from batchery.batching.hooks import BatchHook, BatchShape
from batchery.errors import BatcheryError
from batchery.monitoring import metrics
from batchery.tiers import TIERS
from batchery.retry.policy import is_dead_letter

if TYPE_CHECKING:
    from batchery.batching.queue import Item
    from batchery.models.registry import ModelSpec


class BatchMetrics(BatchHook):
    """Batch sizes, fill and padding, queue wait, model and store time, item outcomes and dead letters.

    ``clock`` must be the batcher queue's clock, since items carry that clock's time of arrival.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def before_batch(self, spec: "ModelSpec", items: Sequence["Item"]) -> None:
        now = self.clock()
        runs = Counter((item.tier, item.enqueued_at) for item in items)
        for (rank, enqueued_at), count in runs.items():
            wait = metrics.QUEUE_WAIT.labels(spec.key, "batcher", TIERS[rank])
            metrics.observe_many(wait, max(now - enqueued_at, 0.0), count)

    def after_prepare(self, spec: "ModelSpec", items: Sequence["Item"], shape: BatchShape) -> None:
        metrics.BATCH_FILL.labels(spec.key).observe(shape.fill)
        padding = shape.padding_fraction
        if padding is None:
            return
        metrics.BATCH_PADDING.labels(spec.key).observe(padding)
        metrics.TOKENS.labels(spec.key, "real").inc(shape.tokens)
        metrics.TOKENS.labels(spec.key, "padding").inc(shape.padded_tokens - shape.tokens)

    def after_batch(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any], seconds: float) -> None:
        metrics.BATCH_SIZE.labels(spec.key).observe(len(items))
        metrics.INFERENCE.labels(spec.key).observe(seconds)

    def after_write(self, spec: "ModelSpec", items: Sequence["Item"], seconds: float) -> None:
        metrics.STORE_WRITE.labels(spec.key).observe(seconds)

    def after_store(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any]) -> None:
        """Outcomes counted from the errors alone: in the usual batch there are none, and the rest succeeded."""
        errors = [r for r in results if isinstance(r, BatcheryError)]
        metrics.record_items(spec.key, "succeeded", len(results) - len(errors))
        if not errors:
            return
        for outcome, count in Counter(error.code for error in errors).items():
            metrics.record_items(spec.key, outcome, count)
        letters = sum(1 for error in errors if is_dead_letter(error))
        if letters:
            metrics.DEAD_LETTERS.labels(spec.key).inc(letters)
