"""The batch size a model's device takes right now, learnt from its out-of-memory errors.

A batch that runs out of device memory is split in halves and run again (:func:`batchery.retry.run_isolated`),
but forming the next batches at the size that just failed would pay for that split every time. So after an
out-of-memory error at ``n`` items, batches are held to ``n // 2`` for a cool-down; then the cap doubles back,
one step per cool-down without another error, probing for the size the device takes again: what fits on a
GPU shifts with other processes, fragmentation and input lengths, so a low cap is a memory, not a verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class AdaptiveBatchSize:
    """``current`` is at most ``ceiling`` (the model's ``max_batch_size``), lower for a while after an error."""

    def __init__(
        self, ceiling: int, cooldown_s: float, name: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ceiling = ceiling
        self.cooldown_s = cooldown_s
        self.name = name
        self.clock = clock
        self._cap = ceiling
        self._changed_at = clock()
        self._lock = threading.Lock()

    @property
    def current(self) -> int:
        """The cap now; reading it after a quiet cool-down raises it one step."""
        with self._lock:
            now = self.clock()
            if self._cap < self.ceiling and now - self._changed_at >= self.cooldown_s:
                self._cap = min(self.ceiling, self._cap * 2)
                self._changed_at = now
                log.info(
                    "model %s: %gs without out-of-memory: batch size up to %d", self.name, self.cooldown_s, self._cap
                )
            return self._cap

    def out_of_memory(self, size: int) -> None:
        """A batch of ``size`` items ran out of device memory: cap at half of it, and restart the cool-down."""
        with self._lock:
            cap = max(1, size // 2)
            if cap < self._cap:
                log.warning("model %s: out of memory at a batch of %d: batch size capped at %d", self.name, size, cap)
                self._cap = cap
            self._changed_at = self.clock()
