"""Failure isolation: one bad item never fails its batch-mates.

When a batch raises, it is split in halves and each half runs again, down to single items: the good items
get their outputs and only the item(s) at fault end with the error that says why. A transient error that
outlasts its retries is no item's fault, so it ends the whole batch at once instead of being bisected into
some 2n sub-batches that would each retry it again; out of memory is the exception, since a half may fit.
A batch that runs out of memory is split at once rather than retried at the size that just failed; only a
single item is retried on it, since nothing smaller can be tried.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from batchery.errors import BatcheryError, DeviceOutOfMemory, ModelError
from batchery.retry.policy import RetryPolicy, is_transient

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[Any]], Sequence[Any]]


def run_isolated(run: RunBatch, inputs: Sequence[Any], policy: RetryPolicy, prepared_run: Callable[[], Sequence[Any]] | None = None) -> list[Any]:
    """One output or :class:`BatcheryError` per input.

    ``run`` prepares and runs any sub-batch; ``prepared_run`` runs the whole batch already prepared (the
    common, successful case pays no second prepare).
    """
    try:
        retry_if = is_transient if len(inputs) == 1 else _transient_but_not_out_of_memory
        return _checked(policy.call(prepared_run or (lambda: run(inputs)), retry_if), len(inputs))
    except Exception as exc:
        if len(inputs) == 1 or (is_transient(exc) and not isinstance(exc, DeviceOutOfMemory)):
            return [as_error(exc)] * len(inputs)
        log.info("a batch of %d failed (%s): bisecting to find the items at fault", len(inputs), exc)
    middle = len(inputs) // 2
    return run_isolated(run, inputs[:middle], policy) + run_isolated(run, inputs[middle:], policy)


def _transient_but_not_out_of_memory(exc: BaseException) -> bool:
    return is_transient(exc) and not isinstance(exc, DeviceOutOfMemory)


def _checked(outputs: Sequence[Any], expected: int) -> list[Any]:
    if len(outputs) != expected:
        raise ModelError(f"the model returned {len(outputs)} outputs for {expected} inputs")
    return list(outputs)


def as_error(exc: BaseException) -> BatcheryError:
    if isinstance(exc, BatcheryError):
        return exc
    return ModelError(f"{type(exc).__name__}: {exc}")
