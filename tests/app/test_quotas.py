"""API keys' quotas through real HTTP, Redis and a worker: 429 beyond them, nothing queued, counted out at the end."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from batchery import keys
from batchery.store.backlog import Backlog
from batchery.store.quotas import Quotas
from tests.conftest import ApiServer
from tests.helpers import error_of, wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")
RUN = uuid.uuid4().hex[:6]  # Redis outlives a module: names of this run's own
LIMITS = {
    "rate": "items_per_minute=10",
    "predict": "items_per_minute=3",
    "flight": "items_in_flight=300",
    "cancel": "items_in_flight=300",
    "answered": "items_in_flight=5",
    "backlog": "items_per_minute=10 items_in_flight=10",
    "free": "",
}


def name(role: str) -> str:
    return f"{role}-{RUN}"


def key(role: str) -> dict[str, str]:
    return {"X-API-Key": f"{role}-key-{RUN}"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("quotas") / "keys"
    path.write_text("".join(f"{role}-key-{RUN} name={name(role)} {limits}\n" for role, limits in LIMITS.items()))
    return str(path)


@pytest.fixture(scope="module")
def limited(settings, keys_file):
    with ApiServer(dataclasses.replace(settings, api_keys_file=keys_file, retry_after_s=3)) as server:
        yield server


def post(api, role: str, items: int, model: str = "echo") -> requests.Response:
    inputs = [f"{uuid.uuid4().hex}-{i}" for i in range(items)]  # no other job's: the cache stays out of it
    return requests.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs}, headers=key(role))


def jobs_of(store, role: str) -> list[str]:
    return store.recent(100, owner=name(role))


def test_items_beyond_a_minute_are_429_naming_the_quota_and_the_key(limited, store):
    assert post(limited, "rate", 6).status_code == 202
    queued = jobs_of(store, "rate")
    refused = post(limited, "rate", 5)
    message = error_of(refused, 429, "quota_exceeded")
    assert name("rate") in message and "10 items per minute" in message and "6 items in the last minute" in message
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert jobs_of(store, "rate") == queued  # nothing queued
    assert post(limited, "rate", 4).status_code == 202  # exactly the quota
    error_of(post(limited, "rate", 1), 429, "quota_exceeded")


def test_predict_counts_against_the_minute_too(limited):
    url = f"{limited.url}/v1/models/echo/predict"
    assert requests.post(url, json={"inputs": [1, 2]}, headers=key("predict")).status_code == 200
    refused = requests.post(url, json={"inputs": [3, 4]}, headers=key("predict"))
    assert "3 items per minute" in error_of(refused, 429, "quota_exceeded") and "Retry-After" in refused.headers


def test_a_request_larger_than_a_quota_is_413_since_no_wait_would_let_it_in(limited):
    message = error_of(post(limited, "rate", 11), 413, "payload_too_large")
    assert name("rate") in message and "10 items per minute" in message
    message = error_of(post(limited, "flight", 301), 413, "payload_too_large")
    assert "300 items in flight" in message


def test_items_in_flight_are_counted_out_when_the_job_completes(limited, store):
    job = post(limited, "flight", 300, model="echo-slow")  # 38 batches of 20 ms at the least
    assert job.status_code == 202, job.text
    refused = post(limited, "flight", 1)
    message = error_of(refused, 429, "quota_exceeded")
    assert name("flight") in message and "300 items in flight" in message and "300 items submitted and not yet done" in message
    assert refused.headers["Retry-After"] == "3"  # BATCHERY_RETRY_AFTER_S: when jobs end is not known
    assert jobs_of(store, "flight") == [job.json()["id"]]
    session = requests.Session()
    session.headers.update(key("flight"))
    assert wait_for_job(session, job.json()["links"]["self"])["status"] == "completed"
    assert post(limited, "flight", 300).status_code == 202


def test_a_cancelled_job_leaves_the_count_at_once(limited):
    job = post(limited, "cancel", 300, model="echo-slow")
    assert job.status_code == 202
    error_of(post(limited, "cancel", 1), 429, "quota_exceeded")
    assert requests.delete(job.json()["links"]["self"], headers=key("cancel")).json()["status"] == "cancelled"
    assert post(limited, "cancel", 300).status_code == 202


def test_a_predict_is_counted_out_once_answered(limited, store):
    url = f"{limited.url}/v1/models/echo/predict"
    quotas = Quotas(store.redis, store.job_ttl_s)
    for _ in range(3):
        assert requests.post(url, json={"inputs": [1, 2, 3, 4, 5]}, headers=key("answered")).status_code == 200
        assert quotas.in_flight(name("answered")) == 0


def test_a_key_without_limits_is_not_counted(limited, store):
    assert post(limited, "free", 50).status_code == 202
    assert not store.redis.exists(keys.tenant_minute(name("free")), keys.tenant_in_flight(name("free")))


def test_a_submission_refused_for_a_full_backlog_counts_against_no_quota(settings, keys_file, store):
    backlog = Backlog(store.redis)
    with ApiServer(dataclasses.replace(settings, api_keys_file=keys_file, max_queued_items=100)) as bounded:
        backlog.reserve("echo", 1000, bound=0)  # someone else's items fill the model's backlog
        try:
            error_of(post(bounded, "backlog", 8), 429, "backlog_full")
        finally:
            backlog.release("echo", 1000)
        assert Quotas(store.redis, store.job_ttl_s).in_flight(name("backlog")) == 0
        assert post(bounded, "backlog", 10).status_code == 202
