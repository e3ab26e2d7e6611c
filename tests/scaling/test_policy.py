"""The scaling policy as a pure function: bounds, the target, both cooldowns and the hysteresis band."""

from __future__ import annotations

import pytest

from batchery.errors import ConfigError
from batchery.scaling import Decision, ScalePolicy
from batchery.settings import Settings

POLICY = ScalePolicy(1, 4, target_backlog_per_process=100, scale_up_cooldown_s=5, scale_down_cooldown_s=30)


def test_a_backlog_over_the_target_grows_the_pool_straight_to_the_size_that_holds_it():
    decision = POLICY.decide({"echo": 250}, size=1, since_change_s=60, low_for_s=0)
    assert decision.size == 3 and not decision.low
    assert decision.reason == "backlog 250 items (echo 250): 250 items per process, over the target of 100"
    assert POLICY.decide({"echo": 100}, 1, 60, 0) == Decision(1), "exactly the target is not over it"
    assert POLICY.decide({"echo": 101}, 1, 60, 0).size == 2


def test_the_models_backlogs_add_up_and_the_reason_names_them_largest_first():
    decision = POLICY.decide({"a": 120, "b": 180, "idle": 0}, 1, 60, 0)
    assert decision.size == 3
    assert decision.reason.startswith("backlog 300 items (b 180, a 120): ")


def test_growth_never_passes_the_maximum():
    assert POLICY.decide({"echo": 10_000}, 2, 60, 0).size == 4
    assert POLICY.decide({"echo": 10_000}, 4, 60, 0) == Decision(4)


def test_growth_waits_out_the_up_cooldown_since_the_last_change():
    assert POLICY.decide({"echo": 1000}, 2, since_change_s=4.9, low_for_s=0) == Decision(2)
    assert POLICY.decide({"echo": 1000}, 2, since_change_s=5.0, low_for_s=0).size == 4


@pytest.mark.parametrize(
    ("size", "backlog", "low"),
    [
        (2, 51, False),  # one process would hold 51 > 50 (half the target): keep two
        (2, 50, True),  # one process at half its target: low
        (3, 101, False),  # two processes would hold 50.5 each: keep three
        (3, 100, True),
        (4, 200, False),  # the band: 200 is under 4 x 100, yet three would hold 66.7 each, over half
        (1, 0, False),  # at the minimum nothing is low
    ],
)
def test_low_means_a_smaller_pool_would_run_at_most_half_its_target(size, backlog, low):
    assert POLICY.decide({"echo": backlog}, size, since_change_s=60, low_for_s=0).low is low


def test_between_the_two_thresholds_the_pool_keeps_its_size_whatever_the_clocks_say():
    """The hysteresis: 3 processes hold 150..300 items with neither growing (over 300) nor shrinking (at most
    100): a backlog that moves inside the band, after a change or long after one, changes nothing."""
    for backlog in (101, 150, 220, 300):
        assert POLICY.decide({"echo": backlog}, 3, since_change_s=1000, low_for_s=1000) == Decision(3)


def test_shrinking_waits_until_the_backlog_has_been_low_for_the_whole_down_cooldown():
    assert POLICY.decide({"echo": 0}, 4, since_change_s=1000, low_for_s=29.9) == Decision(4, low=True)
    decision = POLICY.decide({"echo": 0}, 4, since_change_s=1000, low_for_s=30)
    assert decision.size == 1 and decision.low
    assert (
        decision.reason == "backlog 0 items for 30.0s: a pool of 1 carries at most 50% of the target of 100 per process"
    )


def test_shrinking_goes_to_the_size_that_still_holds_the_backlog_at_half_its_target():
    assert POLICY.decide({"echo": 120}, 4, 1000, 30).size == 3, "120 on 3 is 40 each, under 50"
    assert POLICY.decide({"echo": 60}, 4, 1000, 30).size == 2
    assert POLICY.decide({"echo": 60}, 2, 1000, 30) == Decision(2), "60 on 1 would be over half: 2 is not low"


def test_a_pool_outside_its_bounds_returns_inside_at_once():
    assert POLICY.decide({}, 0, since_change_s=0, low_for_s=0).size == 1
    assert POLICY.decide({}, 6, since_change_s=0, low_for_s=0).size == 4
    assert "outside the maximum of 4" in POLICY.decide({}, 6, 0, 0).reason


def test_a_negative_counter_counts_as_nothing():
    assert POLICY.decide({"echo": -500, "other": 150}, 1, 60, 0).size == 2


def test_unset_bounds_keep_the_fixed_pool_of_today():
    assert ScalePolicy.from_settings(Settings(), cores=8) == ScalePolicy(8, 8)
    fixed = ScalePolicy.from_settings(Settings(worker_processes=3), cores=8)
    assert (fixed.min_processes, fixed.max_processes, fixed.fixed, fixed.start_size(3)) == (3, 3, True, 3)


def test_bounds_from_the_settings():
    only_max = ScalePolicy.from_settings(Settings(worker_max_processes=6), cores=8)
    assert (only_max.min_processes, only_max.max_processes, only_max.start_size(0)) == (1, 6, 1)
    only_min = ScalePolicy.from_settings(Settings(worker_min_processes=2), cores=8)
    assert (only_min.min_processes, only_min.max_processes) == (2, 8), "may grow to one per core"
    both = ScalePolicy.from_settings(
        Settings(worker_min_processes=2, worker_max_processes=5, worker_processes=9, worker_scale_up_cooldown_s=1.5),
        cores=1,
    )
    assert (both.min_processes, both.max_processes, both.start_size(9), both.scale_up_cooldown_s) == (2, 5, 5, 1.5)
    assert ScalePolicy.from_settings(Settings(worker_min_processes=4), cores=2).max_processes == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"worker_min_processes": 4, "worker_max_processes": 2},
        {"worker_min_processes": -1},
        {"worker_max_processes": 2, "worker_target_backlog_per_process": 0},
        {"worker_max_processes": 2, "worker_scale_down_cooldown_s": -1.0},
    ],
)
def test_impossible_bounds_are_config_errors(changes):
    with pytest.raises(ConfigError):
        ScalePolicy.from_settings(Settings(**changes), cores=4)
