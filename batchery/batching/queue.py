"""The batcher's collection step: hand out batches of waiting items, by size or by deadline.

It waits on a condition with the real deadline (the oldest item's arrival plus ``max_wait_s``), never by
polling: a full batch leaves at once, and a lone item waits at most ``max_wait_s`` from when it arrived.
The clock is injectable so that tests can drive it as a pure function of queue, limits and time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from batchery.batching.ticket import Ticket


@dataclass(slots=True)
class Item:
    """One input of one job, waiting for a batch; ``ticket`` is its chunk's countdown."""

    job_id: str
    index: int
    input: Any
    ticket: Ticket
    enqueued_at: float = field(default=0.0)


class QueueClosed(Exception):
    """The batcher is draining for shutdown and takes no new items."""


class ItemQueue:
    """A FIFO of items shared by the chunk tasks (producers) and the batcher (the one consumer)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.clock = clock

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[Item]) -> None:
        now = self.clock()
        with self._cond:
            if self._closed:
                raise QueueClosed("the batcher is shutting down")
            for item in items:
                item.enqueued_at = now
                self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop waiting for more: what is queued still drains, then :meth:`take` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, max_size: int, max_wait_s: float) -> list[Item] | None:
        """The next batch: up to ``max_size`` items, once full or once the oldest has waited ``max_wait_s``."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._items[0].enqueued_at + max_wait_s
            while len(self._items) < max_size and not self._closed:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(max_size, len(self._items))
            return [self._items.popleft() for _ in range(count)]
