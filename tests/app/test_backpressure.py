"""Backpressure: a bound on each model's queued items, answered with 429 and Retry-After beyond it."""

from __future__ import annotations

import uuid

import pytest

from batchery.errors import Cancelled
from batchery.store import ItemResult
from batchery.store.backlog import Backlog
from batchery.store.codec import encode_error, encode_output
from tests.conftest import ApiServer
from tests.helpers import wait_for_job


@pytest.fixture(scope="module")
def bounded(settings_module):
    with ApiServer(settings_module) as server:
        yield server


@pytest.fixture(scope="module")
def settings_module(settings):
    import dataclasses

    return dataclasses.replace(settings, max_queued_items=300, retry_after_s=7)


def inputs(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{run}-{i}" for i in range(n)]


def test_beyond_the_bound_is_429_with_retry_after_and_then_accepted_again(http, bounded, echo_worker, store):
    backlog = Backlog(store.redis)
    first = http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": inputs(400)})
    assert first.status_code == 202, "a job over the bound is taken when nothing is queued"
    refused = http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": inputs(10)})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.json()["error"]["code"] == "backlog_full"
    assert "echo-slow" in refused.json()["error"]["message"]
    wait_for_job(http, first.json()["links"]["self"])
    assert backlog.queued("echo-slow") == 0, "every started chunk left the backlog"
    again = http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": inputs(10)})
    assert again.status_code == 202
    wait_for_job(http, again.json()["links"]["self"])


def test_cache_hits_do_not_count_against_the_backlog(http, bounded, echo_worker, store):
    done = inputs(350)
    wait_for_job(http, http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": done}).json()["links"]["self"])
    busy = http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": inputs(200)})
    assert busy.status_code == 202
    assert Backlog(store.redis).queued("echo-slow") <= 200
    served = http.post(f"{bounded.url}/v1/jobs", json={"model": "echo-slow", "inputs": done[:90]})
    assert served.status_code == 202, "90 queued items would pass the bound, but every one is a cache hit"
    assert wait_for_job(http, served.json()["links"]["self"])["counts"]["cached"] == 90
    wait_for_job(http, busy.json()["links"]["self"])


def test_items_leave_the_backlog_once_however_often_they_are_recorded(store):
    backlog = Backlog(store.redis)
    model = f"m-{uuid.uuid4().hex[:6]}"
    assert backlog.reserve(model, 100, bound=1000) == (True, 100)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": model, "version": "1", "total": 100})
    for _ in range(3):
        store.record(ItemResult(job_id, i, encode_output(i), True) for i in range(60))
    assert backlog.queued(model) == 40
    store.fail_missing(job_id, 100, encode_error(Cancelled()))
    assert backlog.queued(model) == 0
    assert backlog.reserve(model, 10, bound=5) == (True, 10), "an empty backlog takes any job"
    assert backlog.reserve(model, 1, bound=5) == (False, 10)
