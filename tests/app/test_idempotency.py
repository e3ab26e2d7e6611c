"""An Idempotency-Key survives the failures it exists for: after a 429, a 503 or a 500, a retry with the same
key submits afresh, instead of answering 503 for a week or replaying a job that never ran."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from batchery import keys
from batchery.cache import cache_key
from batchery.models.registry import load_registry
from batchery.store.backlog import Backlog
from tests.conftest import ApiServer
from tests.helpers import wait_for_job


@pytest.fixture(scope="module")
def bounded(settings):
    with ApiServer(dataclasses.replace(settings, max_queued_items=100, retry_after_s=1)) as server:
        yield server


def post(http, api, inputs, key):
    return http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": inputs}, headers={"Idempotency-Key": key})


def test_a_key_refused_with_429_submits_when_retried(http, bounded, echo_worker, store):
    key = f"retry-after-429-{uuid.uuid4().hex}"
    inputs = [f"{key}-{i}" for i in range(3)]  # inputs no other test sends: the cache stays out of it
    backlog = Backlog(store.redis)
    backlog.reserve("echo", 1000, bound=0)  # someone else's items fill the model's backlog
    try:
        assert post(http, bounded, inputs, key).status_code == 429
    finally:
        backlog.release("echo", 1000)
    retried = post(http, bounded, inputs, key)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert wait_for_job(http, retried.json()["links"]["self"])["counts"]["succeeded"] == 3
    again = post(http, bounded, inputs, key)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == retried.json()["id"]


def test_a_key_whose_submission_failed_in_redis_submits_when_retried(http, api, echo_worker, store, settings):
    key = f"retry-after-500-{uuid.uuid4().hex}"
    inputs = [f"{uuid.uuid4().hex}-{i}" for i in range(3)]
    poisoned = keys.cache_entry(cache_key(load_registry(settings.models_file).get("echo"), inputs[1]))
    store.redis.rpush(poisoned, "not a cache entry")  # the claim fails with WRONGTYPE
    try:
        failed = post(http, api, inputs, key)
        assert failed.status_code in (500, 503), failed.text
    finally:
        store.redis.delete(poisoned)
    retried = post(http, api, inputs, key)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers, retried.text
    assert wait_for_job(http, retried.json()["links"]["self"])["counts"]["succeeded"] == 3
