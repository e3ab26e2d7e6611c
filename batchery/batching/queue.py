"""The batcher's collection step: hand out batches of waiting items, by size or by deadline.

It waits on a condition with the real deadline (the oldest item's arrival plus ``max_wait_s``), never by
polling: a full batch leaves at once, and a lone item waits at most ``max_wait_s`` from when it arrived.
Which items make the batch is :func:`batchery.batching.selection.select`'s choice (by count, by token
budget, by like length). The clock is injectable so that tests can drive it as a pure function of queue,
limits and time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterable

from batchery.batching.selection import Limits, select
from batchery.batching.ticket import Ticket


@dataclass(slots=True)
class Item:
    """One input of one job, waiting for a batch; ``ticket`` is its chunk's countdown.

    ``features`` is what the runtime made of the input on arrival (its tokens, say) and ``length`` its
    length in what a batch pads to; None where the runtime does not measure one.
    """

    job_id: str
    index: int
    input: Any
    ticket: Ticket
    enqueued_at: float = field(default=0.0)
    features: Any = None
    length: int | None = None


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

    def clear(self) -> int:
        """Drop every waiting item (their batcher died); returns how many."""
        with self._cond:
            dropped = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        """Stop waiting for more: what is queued still drains, then :meth:`take` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(
        self,
        max_size: int | Callable[[], int],
        max_wait_s: float,
        *,
        max_tokens: int = 0,
        by_length: bool = False,
    ) -> list[Item] | None:
        """The next batch: up to ``max_size`` items (and ``max_tokens`` padded tokens), once a batch is full or
        once the oldest item has waited ``max_wait_s``; with ``by_length``, items of like length together.

        ``max_size`` may be a function, read each time a batch is chosen: the size a device takes can drop
        while the batcher waits for items.
        """
        with self._cond:
            while True:
                while not self._items:
                    if self._closed:
                        return None
                    self._cond.wait()
                remaining = self._items[0].enqueued_at + max_wait_s - self.clock()
                limits = Limits(max_size() if callable(max_size) else max_size, max_tokens, by_length)
                batch = self._select(limits, due=self._closed or remaining <= 0)
                if batch is not None:
                    return batch
                self._cond.wait(remaining)

    def _select(self, limits: Limits, due: bool) -> list[Item] | None:
        if self._items[0].length is None:  # nothing to bucket or budget by: the cheap path, by count
            limits = Limits(limits.max_items)
        window = list(islice(self._items, limits.window()))
        chosen = select([item.length for item in window], limits, due)
        if chosen is None:
            return None
        if chosen == list(range(len(chosen))):
            return [self._items.popleft() for _ in chosen]
        return self._remove(window, set(chosen))

    def _remove(self, window: list[Item], chosen: set[int]) -> list[Item]:
        """Take the chosen items out of the window; the others keep their places, oldest first."""
        for _ in window:
            self._items.popleft()
        self._items.extendleft(reversed([item for i, item in enumerate(window) if i not in chosen]))
        return [item for i, item in enumerate(window) if i in chosen]
