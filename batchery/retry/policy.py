"""Retrying transient failures with exponential backoff, jitter and a cap.

Only errors that may pass on their own are retried: an input the model cannot take fails the same way every
time, and retrying it would only delay its batch-mates.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from batchery.errors import BatcheryError, TransientError

T = TypeVar("T")
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_TYPES)


def is_dead_letter(result: object) -> bool:
    """An item's error that survived every retry; permanent errors were never retried and are not letters."""
    return isinstance(result, BatcheryError) and is_transient(result)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``retries`` retries after the first attempt (so ``retries + 1`` attempts in all). Retry ``n``
    waits ``base_s * 2**(n-1)`` plus up to ``base_s`` of jitter, never more than ``max_s``.

    ``on_retry`` is called once before each retry (the worker counts retries per model with it).
    """

    retries: int = 3
    base_s: float = 0.05
    max_s: float = 2.0
    on_retry: Callable[[], None] | None = field(default=None, compare=False)

    def call(self, fn: Callable[[], T], retry_if: Callable[[BaseException], bool] = is_transient) -> T:
        """``fn()``, retried on transient errors (or on what ``retry_if`` says); the last error is raised as it was.

        The first attempt is a plain call: almost every batch succeeds at once, and building tenacity's retry
        machinery costs more than an echo batch of 64 items.
        """
        try:
            return fn()
        except BaseException as exc:
            if self.retries <= 0 or not retry_if(exc):
                raise
        if self.on_retry is not None:
            self.on_retry()
        time.sleep(self.delay(1))
        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential_jitter(multiplier=2 * self.base_s, jitter=self.base_s, max=self.max_s),  # from retry 2 on
            retry=retry_if_exception(retry_if),
            reraise=True,
            before_sleep=self._before_sleep,
        )
        return retrying(fn)

    @property
    def attempts(self) -> int:
        """Attempts in all: the first and each retry."""
        return self.retries + 1

    def delay(self, retry: int) -> float:
        """How long to wait before retry number ``retry`` (1-based): the same curve as :meth:`call`'s."""
        return min(self.max_s, self.base_s * 2 ** (retry - 1) + random.uniform(0, self.base_s))

    def _before_sleep(self, state: object) -> None:
        if self.on_retry is not None:
            self.on_retry()
