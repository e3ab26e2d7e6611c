"""The retry policy calls its ``on_retry`` once before each retry, which is how workers count retries."""

from __future__ import annotations

import pytest

from batchery.errors import InvalidInput, TransientError
from batchery.retry import RetryPolicy


def flaky(failures: int, error: Exception):
    calls = []

    def run() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"

    return run, calls


def test_on_retry_counts_each_retry_not_each_attempt():
    retries = []
    policy = RetryPolicy(retries=5, base_s=0.001, max_s=0.002, on_retry=lambda: retries.append(1))
    run, calls = flaky(3, TransientError("flaky"))
    assert policy.call(run) == "ok"
    assert (len(calls), len(retries)) == (4, 3)


def test_a_permanent_error_is_never_retried_and_never_counted():
    retries = []
    policy = RetryPolicy(retries=5, base_s=0.001, on_retry=lambda: retries.append(1))
    run, calls = flaky(1, InvalidInput("bad"))
    with pytest.raises(InvalidInput):
        policy.call(run)
    assert (len(calls), retries) == (1, [])


def test_the_callback_takes_no_part_in_equality():
    assert RetryPolicy(on_retry=print) == RetryPolicy()


def test_retries_count_retries_not_attempts():
    """``BATCHERY_RETRY_ATTEMPTS=3`` is three retries after the first attempt: four attempts in all."""
    retries = []
    policy = RetryPolicy(retries=3, base_s=0.001, max_s=0.002, on_retry=lambda: retries.append(1))
    run, calls = flaky(100, TransientError("down"))
    with pytest.raises(TransientError):
        policy.call(run)
    assert (len(calls), len(retries), policy.attempts) == (4, 3, 4)
    run, calls = flaky(100, TransientError("down"))
    with pytest.raises(TransientError):
        RetryPolicy(retries=0).call(run)
    assert len(calls) == 1
