"""Retry policy and bisection, with plain functions standing in for a model."""

from __future__ import annotations

import time

import pytest

from batchery.errors import InvalidInput, ModelError, TransientError
from batchery.retry import RetryPolicy, run_isolated

FAST = RetryPolicy(retries=2, base_s=0.001, max_s=0.01)


class Flaky:
    """Raises a transient error on the first ``failures`` calls, then echoes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, inputs):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("device hiccup")
        return list(inputs)


def test_transient_errors_are_retried_then_succeed():
    flaky = Flaky(failures=2)
    assert run_isolated(flaky, [1, 2, 3], FAST) == [1, 2, 3]
    assert flaky.calls == 3


def test_retries_back_off_exponentially_up_to_the_cap():
    flaky = Flaky(failures=3)
    policy = RetryPolicy(retries=3, base_s=0.05, max_s=0.08)
    started = time.perf_counter()
    assert policy.call(lambda: flaky([1])) == [1]
    waited = time.perf_counter() - started
    assert 0.05 + 0.08 + 0.08 <= waited < 0.05 + 0.08 + 0.08 + 0.3, "three waits: 0.05, then capped at 0.08, plus jitter"


def test_permanent_errors_are_not_retried():
    calls = []

    def model(inputs):
        calls.append(list(inputs))
        raise InvalidInput("cannot take this")

    assert [e.code for e in run_isolated(model, ["x"], FAST)] == ["invalid_input"]
    assert calls == [["x"]]


def test_transient_errors_that_persist_end_as_errors_after_the_attempts():
    flaky = Flaky(failures=100)
    results = run_isolated(flaky, ["a"], FAST)
    assert results[0].code == "transient_error" and flaky.calls == 3


@pytest.mark.parametrize("bad", [[0], [63], [5, 40], []])
def test_bisection_isolates_exactly_the_bad_items(bad):
    inputs = ["bad" if i in bad else i for i in range(64)]

    def model(batch):
        if "bad" in batch:
            raise ValueError("poison")
        return [x * 2 for x in batch]

    results = run_isolated(model, inputs, FAST)
    for i, result in enumerate(results):
        if i in bad:
            assert isinstance(result, ModelError) and "poison" in result.message
        else:
            assert result == i * 2


def test_the_prepared_batch_is_used_when_it_succeeds():
    prepared_calls, sub_calls = [], []
    results = run_isolated(lambda b: sub_calls.append(b) or b, [1, 2], FAST, prepared_run=lambda: prepared_calls.append(1) or [10, 20])
    assert results == [10, 20] and prepared_calls == [1] and sub_calls == []


def test_a_transient_error_that_outlasts_its_retries_fails_the_batch_without_bisecting():
    flaky = Flaky(failures=1000)
    results = run_isolated(flaky, list(range(64)), FAST)
    assert [r.code for r in results] == ["transient_error"] * 64
    assert flaky.calls == FAST.attempts, "no sub-batch may retry an error that no item caused"


def test_out_of_memory_is_still_bisected_so_smaller_batches_can_fit():
    from batchery.errors import DeviceOutOfMemory

    def model(batch):
        if len(batch) > 16:
            raise DeviceOutOfMemory("batch too big")
        return list(batch)

    assert run_isolated(model, list(range(64)), FAST) == list(range(64))
