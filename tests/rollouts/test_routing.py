"""Routing and judging as pure functions: where a key falls for given weights, and when a canary is worse."""

from __future__ import annotations

import uuid

from batchery.rollouts import judge, pick
from batchery.store.activity import LATENCY_BUCKETS, Outcomes, latency_bucket


def test_a_key_falls_on_one_version_and_the_shares_follow_the_weights():
    keys = [uuid.uuid4().hex for _ in range(20_000)]
    weights = {"v1": 0.8, "v2": 0.2}
    chosen = [pick(weights, key) for key in keys]
    assert chosen == [pick(dict(weights), key) for key in keys], "the same key, the same version"
    assert 0.19 < chosen.count("v2") / len(keys) < 0.21
    assert {pick({"v1": 4, "v2": 1}, key) for key in keys[:50]} == {pick(weights, key) for key in keys[:50]}, (
        "only ratios count"
    )


def test_moving_weight_moves_only_the_keys_in_between():
    keys = [uuid.uuid4().hex for _ in range(5_000)]
    before = {key: pick({"v1": 0.9, "v2": 0.1}, key) for key in keys}
    after = {key: pick({"v1": 0.8, "v2": 0.2}, key) for key in keys}
    assert all(after[key] == "v2" for key in keys if before[key] == "v2"), "a key on the canary stays there"
    assert 0.08 < sum(before[k] != after[k] for k in keys) / len(keys) < 0.12


def test_versions_of_weight_zero_get_nothing_and_all_zero_is_none():
    keys = [uuid.uuid4().hex for _ in range(2_000)]
    assert {pick({"v1": 1, "v2": 0, "v3": 1}, key) for key in keys} == {"v1", "v3"}
    assert pick({"v1": 0, "v2": 0}, "any") is None


def outcomes(served: int, errors: int, latency_s: float) -> Outcomes:
    latencies = [0] * LATENCY_BUCKETS
    latencies[latency_bucket(latency_s)] = served
    return Outcomes(served, errors, tuple(latencies))


def test_a_canary_is_judged_only_on_enough_items_and_past_the_margins():
    primary = outcomes(200, 2, 0.010)
    assert judge(primary, outcomes(19, 19, 0.010), 20, 0.05, 0.5) is None, "too few items to judge"
    assert judge(outcomes(19, 0, 0.01), outcomes(50, 50, 0.010), 20, 0.05, 0.5) is None, "too few on the primary"
    assert judge(primary, outcomes(100, 5, 0.010), 20, 0.05, 0.5) is None, "4 points worse: within the margin"
    worse = judge(primary, outcomes(100, 7, 0.010), 20, 0.05, 0.5)
    assert worse.reason == "errors" and "7.0%" in worse.why and "1.0%" in worse.why
    assert judge(primary, outcomes(100, 0, 0.014), 20, 0.05, 0.5) is None, "1.4 times as long: within 50%"
    slow = judge(primary, outcomes(100, 0, 0.020), 20, 0.05, 0.5)
    assert slow.reason == "latency" and "ms" in slow.why
    assert judge(primary, outcomes(100, 0, 0.020), 20, 0.05, 0.5, latency_min_s=0.025) is None, "10 ms is noise"
    assert judge(primary, outcomes(100, 0, 0.050), 20, 0.05, 0.5, latency_min_s=0.025).reason == "latency"


def test_the_p95_is_read_to_within_a_quarter():
    for seconds in (0.0004, 0.003, 0.05, 1.7, 40.0):
        p95 = outcomes(100, 0, seconds).quantile_s(0.95)
        assert seconds <= p95 < max(seconds, 0.001) * 1.25 + 1e-12
    mixed = Outcomes(100, 0, tuple(94 if k == latency_bucket(0.01) else 6 if k == latency_bucket(1.0) else 0
                                   for k in range(LATENCY_BUCKETS)))
    assert 1.0 <= mixed.quantile_s(0.95) < 1.25 and mixed.quantile_s(0.5) < 0.0125
