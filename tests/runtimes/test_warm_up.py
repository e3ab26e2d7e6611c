"""Warm-up runs a real batch at every configured size before a worker serves."""

from __future__ import annotations

from typing import Any, Sequence

import pytest

from batchery.errors import DeviceOutOfMemory
from batchery.models.registry import ModelSpec
from batchery.runtimes.echo import EchoRuntime


class CountingEcho(EchoRuntime):
    """The echo runtime, noting the size of each batch it runs."""

    def __init__(self, spec: ModelSpec, device: str) -> None:
        super().__init__(spec, device)
        self.batches: list[int] = []

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        self.batches.append(len(prepared))
        return super().run(prepared)


@pytest.mark.parametrize(
    ("max_batch_size", "configured", "expected"),
    [(64, None, [64]), (64, [1, 8, 32], [1, 8, 32, 64]), (16, [8, 64, 0], [8, 16])],
)
def test_a_batch_at_each_warm_up_size_up_to_max_batch_size(max_batch_size, configured, expected):
    options = {} if configured is None else {"warm_up_batch_sizes": configured}
    runtime = CountingEcho(ModelSpec("echo-warm", "echo", max_batch_size=max_batch_size, options=options), "cpu")
    assert runtime.warm_up() == expected
    assert runtime.batches == expected


def test_a_tensor_model_warms_up_on_inputs_of_its_shape():
    spec = ModelSpec("echo-tensor", "echo", input="tensor", max_batch_size=4, options={"shape": [2, 3]})
    runtime = CountingEcho(spec, "cpu")
    runtime.warm_up()
    assert runtime.batches == [4] and runtime.example_input() == [[0.0] * 3] * 2


@pytest.mark.parametrize(
    ("max_batch_size", "configured", "oom_above", "expected"),
    [(32, None, 8, [8]), (32, [4, 16], 8, [4]), (32, [4, 16], 20, [4, 16])],
)
def test_a_warm_up_size_that_runs_out_of_memory_ends_the_warm_up_and_says_so(
    max_batch_size, configured, oom_above, expected, caplog
):
    options = {"oom_above": oom_above, **({} if configured is None else {"warm_up_batch_sizes": configured})}
    runtime = CountingEcho(ModelSpec("echo-small", "echo", max_batch_size=max_batch_size, options=options), "cpu")
    assert runtime.warm_up() == expected
    assert "a warm-up batch of" in caplog.text and "does not fit" in caplog.text


def test_a_model_that_cannot_run_one_item_fails_its_warm_up():
    runtime = CountingEcho(ModelSpec("echo-none", "echo", max_batch_size=4, options={"oom_above": 0}), "cpu")
    with pytest.raises(DeviceOutOfMemory):
        runtime.warm_up()
    assert runtime.batches == [4, 2, 1]
