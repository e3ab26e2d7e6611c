"""API keys' quotas against a real Redis: a sliding minute, items in flight counted in and out, no drift."""

from __future__ import annotations

import time
import uuid

import pytest

from batchery import keys
from batchery.store import ItemResult
from batchery.store.codec import encode_output
from batchery.store.quotas import Admission, Limits, Quotas, Refusal

T0 = 1_900_000_000.25  # a fixed clock for the per-minute window: the script takes the time it is given


@pytest.fixture
def quotas(store) -> Quotas:
    return Quotas(store.redis, store.job_ttl_s)


@pytest.fixture
def name() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def job(store, total: int = 1) -> str:
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "quota-test", "version": "1", "total": total})
    return job_id


def finish(store, job_id: str, total: int = 1) -> None:
    store.record(ItemResult(job_id, i, encode_output(i), True) for i in range(total))
    assert store.get(job_id)["status"] == "completed"


PER_MINUTE = Limits(items_per_minute=10)


def test_items_per_minute_slide_and_the_wait_is_until_enough_seconds_leave(quotas, name):
    assert isinstance(quotas.admit(name, "a", 6, PER_MINUTE, now=T0), Admission)
    assert isinstance(quotas.admit(name, "b", 3, PER_MINUTE, now=T0 + 30), Admission)
    assert quotas.admit(name, "c", 2, PER_MINUTE, now=T0 + 45) == Refusal("items_per_minute", 9, 15)
    assert quotas.admit(name, "c", 5, PER_MINUTE, now=T0 + 59) == Refusal("items_per_minute", 9, 1)
    assert isinstance(quotas.admit(name, "d", 1, PER_MINUTE, now=T0 + 59), Admission)  # exactly the limit
    # the first six leave the window 60 s after their second; the last four only 30 s later
    assert quotas.admit(name, "e", 7, PER_MINUTE, now=T0 + 60) == Refusal("items_per_minute", 4, 30)
    assert isinstance(quotas.admit(name, "e", 6, PER_MINUTE, now=T0 + 60), Admission)
    assert quotas.redis.ttl(keys.tenant_minute(name)) <= keys.QUOTA_WINDOW_S + 1


def test_a_refused_submission_counts_nothing_and_one_given_back_leaves_its_minute(quotas, name):
    both = Limits(items_per_minute=10, items_in_flight=5)
    assert isinstance(quotas.admit(name, "a", 4, both, now=T0), Admission)
    assert quotas.admit(name, "b", 2, both, now=T0 + 1) == Refusal("items_in_flight", 4, 0)
    assert quotas.in_flight(name) == 4
    given = quotas.admit(name, "c", 1, both, now=T0 + 2)
    assert isinstance(given, Admission) and quotas.in_flight(name) == 5
    quotas.give_back(given)
    assert quotas.in_flight(name) == 4
    quotas.give_back(given)  # twice is once
    assert quotas.in_flight(name) == 4
    # what counts against the minute is 4 (a) and nothing of b or c
    assert quotas.admit(name, "d", 7, Limits(items_per_minute=10), now=T0 + 3) == Refusal("items_per_minute", 4, 57)


def test_in_flight_is_counted_out_when_the_job_ends(quotas, store, name):
    limits = Limits(items_in_flight=3)
    first, second = job(store), job(store)
    assert isinstance(quotas.admit(name, first, 2, limits), Admission)
    assert quotas.admit(name, second, 2, limits) == Refusal("items_in_flight", 2, 0)
    finish(store, first)
    assert isinstance(quotas.admit(name, second, 2, limits), Admission)  # the sweep found the first one ended
    assert quotas.in_flight(name) == 2
    store.cancel(second)
    assert isinstance(quotas.admit(name, job(store), 3, limits), Admission)
    assert quotas.in_flight(name) == 3


def test_count_out_is_at_once_and_only_once(quotas, store, name):
    limits = Limits(items_in_flight=3)
    first = job(store)
    quotas.admit(name, first, 3, limits)
    assert quotas.count_out(name, first) == 3 and quotas.count_out(name, first) == 0
    assert quotas.in_flight(name) == 0


def test_a_job_whose_record_never_came_is_held_for_a_while_then_counted_out(quotas, name):
    """Between counting in and writing its record, a job has none: a sweep then must not count it out."""
    limits = Limits(items_in_flight=4)
    now = time.time()
    assert isinstance(quotas.admit(name, uuid.uuid4().hex, 3, limits, now=now), Admission)
    assert quotas.admit(name, "next", 3, limits, now=now + 1) == Refusal("items_in_flight", 3, 0)
    quotas.redis.delete(keys.tenant_swept(name))
    later = now + keys.QUOTA_PENDING_S + 1
    assert isinstance(quotas.admit(name, "next", 3, limits, now=later), Admission)
    assert quotas.in_flight(name) == 3


def test_a_refusal_sweeps_every_active_job_not_only_the_oldest(quotas, store, name):
    limits = Limits(items_in_flight=keys.QUOTA_SWEEP_OLDEST + 2)
    jobs = [job(store) for _ in range(keys.QUOTA_SWEEP_OLDEST + 2)]
    for job_id in jobs:
        assert isinstance(quotas.admit(name, job_id, 1, limits), Admission)
    finish(store, jobs[-1])  # the newest ends; the oldest ones still run
    assert isinstance(quotas.admit(name, job(store), 1, limits), Admission)
    assert quotas.in_flight(name) == limits.items_in_flight


def test_full_sweeps_are_at_most_one_a_second_per_key(quotas, store, name):
    limits = Limits(items_in_flight=keys.QUOTA_SWEEP_OLDEST + 1)
    jobs = [job(store) for _ in range(keys.QUOTA_SWEEP_OLDEST + 1)]
    for job_id in jobs:
        quotas.admit(name, job_id, 1, limits)
    assert isinstance(quotas.admit(name, "x", 1, limits), Refusal)  # swept everything: nothing ended
    finish(store, jobs[-1])
    assert isinstance(quotas.admit(name, "x", 1, limits), Refusal)  # within the second: the oldest only
    time.sleep(keys.QUOTA_SWEEP_EVERY_MS / 1000 + 0.1)
    assert isinstance(quotas.admit(name, "x", 1, limits), Admission)


def test_the_counts_expire_with_the_jobs_they_count(quotas, store, name):
    quotas.admit(name, job(store), 1, Limits(items_per_minute=5, items_in_flight=5))
    for key in (keys.tenant_active(name), keys.tenant_items(name), keys.tenant_in_flight(name)):
        assert 0 < quotas.redis.ttl(key) <= store.job_ttl_s + keys.QUOTA_PENDING_S
    assert 0 < quotas.redis.ttl(keys.tenant_minute(name)) <= keys.QUOTA_WINDOW_S + 1


def test_no_limits_count_nothing(quotas, name):
    assert isinstance(quotas.admit(name, "a", 10**9, Limits()), Admission)
    assert not quotas.redis.exists(keys.tenant_minute(name), keys.tenant_in_flight(name))
