"""The batch size learnt from out-of-memory errors, on a clock the test drives."""

from __future__ import annotations

from batchery.batching.adaptive import AdaptiveBatchSize


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_error_halves_the_failed_size_and_the_cap_climbs_back_one_step_per_cool_down():
    clock = Clock()
    size = AdaptiveBatchSize(64, cooldown_s=10, clock=clock)
    assert size.current == 64
    size.out_of_memory(64)
    assert size.current == 32
    size.out_of_memory(32)
    assert size.current == 16
    clock.now += 9.9
    assert size.current == 16, "not before the cool-down"
    clock.now += 0.1
    assert size.current == 32
    assert size.current == 32, "one step per cool-down, not one per read"
    clock.now += 10
    assert size.current == 64
    clock.now += 100
    assert size.current == 64, "never above the model's max_batch_size"


def test_an_error_while_probing_drops_the_cap_again_and_restarts_the_cool_down():
    clock = Clock()
    size = AdaptiveBatchSize(64, cooldown_s=10, clock=clock)
    size.out_of_memory(64)
    clock.now += 10
    assert size.current == 64
    size.out_of_memory(64)
    clock.now += 5
    assert size.current == 32


def test_an_error_in_a_small_sub_batch_never_raises_the_cap_and_one_item_is_the_floor():
    size = AdaptiveBatchSize(64, cooldown_s=10, clock=Clock())
    size.out_of_memory(16)
    size.out_of_memory(40)
    assert size.current == 8
    size.out_of_memory(1)
    assert size.current == 1
