"""A chunk's countdown: the chunk task waits on it until the batcher has stored every one of its items."""

from __future__ import annotations

import threading
from typing import Any


class Ticket:
    """Counts a chunk's items as their outputs (or errors) reach Redis; ``deadline`` is its job's (epoch s)."""

    def __init__(self, count: int, deadline: float | None = None) -> None:
        self._remaining = count
        self.deadline = deadline
        self._done = threading.Event()
        self.succeeded = 0
        self.failed = 0
        self.error: BaseException | None = None
        #: Set by hooks on the chunk's thread (:meth:`BatchHook.on_submit`), read by them around its batches.
        self.context: Any = None
        if count == 0:
            self._done.set()

    def settle(self, succeeded: int, failed: int) -> None:
        """Called by the batcher's writer once items are durably stored."""
        self.succeeded += succeeded
        self.failed += failed
        self._remaining -= succeeded + failed
        if self._remaining <= 0:
            self._done.set()

    def abort(self, error: BaseException) -> None:
        """The items could not be stored: the chunk task re-raises this so Celery can retry the chunk."""
        self.error = error
        self._done.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)
