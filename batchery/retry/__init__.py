"""Retries with backoff, failure isolation by bisection, and which failures become dead letters."""

from batchery.retry.isolate import as_error, run_isolated
from batchery.retry.policy import RetryPolicy, is_dead_letter, is_transient

__all__ = ["RetryPolicy", "as_error", "is_dead_letter", "is_transient", "run_isolated"]
