"""Retries with backoff and failure isolation by bisection."""

from batchery.retry.isolate import as_error, run_isolated
from batchery.retry.policy import RetryPolicy, is_transient

__all__ = ["RetryPolicy", "as_error", "is_transient", "run_isolated"]
