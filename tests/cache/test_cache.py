"""The result cache against a real Redis, and through the API with a real worker process."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from batchery import keys
from batchery.cache import ResultCache, cache_key
from batchery.models.registry import load_registry
from batchery.store import ItemResult
from batchery.store.codec import encode_output
from tests.helpers import new_job, wait_for_job


def unique(n: int, tag: str = "") -> list[str]:
    """Inputs no other test submits, so that each test starts with a cold cache."""
    run = uuid.uuid4().hex[:8]
    return [f"{tag}{run}-{i}" for i in range(n)]


def submit(http, api, inputs: list, model: str = "echo-slow", **extra) -> dict:
    response = http.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def results(http, job: dict) -> list:
    body = http.get(job["links"]["results"], params={"limit": 10_000}).json()
    return [r.get("output", r.get("error")) for r in body["results"]]


def chunks_run(worker, job_id: str) -> int:
    return worker.log_path.read_text().count(f"Task batchery.run_chunk[{job_id}.") // 2


@pytest.fixture(scope="module")
def spec(settings):
    return load_registry(settings.models_file).get("echo")



def test_the_key_names_model_and_version_and_ignores_key_order(spec):
    assert cache_key(spec, {"a": 1, "b": [2]}) == cache_key(spec, {"b": [2], "a": 1})
    assert cache_key(spec, "x") != cache_key(dataclasses.replace(spec, version="2"), "x")
    assert cache_key(spec, "x").startswith("echo@1:")


def test_a_computed_item_is_a_hit_for_its_version_and_a_miss_for_another(store, spec):
    cache = ResultCache(store.redis, store.job_ttl_s)
    inputs = unique(3)
    first = new_job(store, 3, "echo")
    assert cache.claim(first, spec, inputs).owned == [0, 1, 2]
    store.record(ItemResult(first, i, encode_output(f"out-{i}"), True) for i in range(3))
    again = cache.claim(new_job(store, 3, "echo"), spec, inputs)
    assert again.owned == [] and [i for i, _ in again.hits] == [0, 1, 2]
    assert [raw for _, raw in again.hits] == [encode_output(f"out-{i}") for i in range(3)]
    assert cache.claim(new_job(store, 3, "echo"), dataclasses.replace(spec, version="2"), inputs).owned == [0, 1, 2]


def test_errors_are_shared_with_waiters_but_never_cached(store, spec):
    cache = ResultCache(store.redis, store.job_ttl_s)
    owner, waiter = new_job(store, 1, "echo"), new_job(store, 1, "echo")
    value = unique(1)
    assert cache.claim(owner, spec, value).owned == [0]
    assert cache.claim(waiter, spec, value).waiting == 1
    error = b'e{"code":"invalid_input","message":"no"}'
    store.record([ItemResult(owner, 0, error, False)])
    assert store.outputs(waiter, 0, 1) == [(0, error)]
    assert store.get(waiter)["cached"] == 1 and store.get(waiter)["status"] == "completed"
    assert cache.claim(new_job(store, 1, "echo"), spec, value).owned == [0]


def test_the_cache_keeps_at_most_its_bound_dropping_the_oldest(settings, spec):
    store = dataclasses.replace(settings, cache_max_entries=3).job_store()
    cache = ResultCache(store.redis, store.job_ttl_s)
    inputs = unique(5)
    for value in inputs:
        job_id = new_job(store, 1, "echo")
        assert cache.claim(job_id, spec, [value]).owned == [0]
        store.record([ItemResult(job_id, 0, encode_output(value), True)])
    assert store.redis.zcard(keys.cache_index()) == 3
    assert cache.claim(new_job(store, 5, "echo"), spec, inputs).owned == [0, 1]


def test_a_resubmitted_job_is_served_wholly_from_the_cache_and_faster(http, api, echo_worker):
    inputs = unique(400)
    started = time.perf_counter()
    first = wait_for_job(http, submit(http, api, inputs)["links"]["self"])
    computed_s = time.perf_counter() - started
    started = time.perf_counter()
    job = submit(http, api, inputs)
    second = wait_for_job(http, job["links"]["self"])
    cached_s = time.perf_counter() - started
    assert first["counts"]["cached"] == 0
    assert second["counts"] == {"succeeded": 400, "failed": 0, "pending": 0, "cached": 400}
    assert results(http, job) == inputs
    assert chunks_run(echo_worker, job["id"]) == 0, "a fully cached job reaches no worker"
    assert cached_s < computed_s / 3, (computed_s, cached_s)


def test_cache_false_bypasses_the_cache(http, api, echo_worker):
    inputs = unique(20)
    wait_for_job(http, submit(http, api, inputs)["links"]["self"])
    job = submit(http, api, inputs, cache=False)
    assert wait_for_job(http, job["links"]["self"])["counts"]["cached"] == 0
    assert chunks_run(echo_worker, job["id"]) == 1


def test_duplicates_in_one_job_are_computed_once(http, api, echo_worker):
    x, y = unique(2)
    inputs = [x, y] * 50
    job = submit(http, api, inputs)
    status = wait_for_job(http, job["links"]["self"])
    assert status["counts"] == {"succeeded": 100, "failed": 0, "pending": 0, "cached": 98}
    assert results(http, job) == inputs
    assert chunks_run(echo_worker, job["id"]) == 1


def test_identical_inputs_in_flight_across_jobs_are_computed_once(http, api, echo_worker):
    inputs = unique(200)
    first = submit(http, api, inputs)
    second = submit(http, api, list(reversed(inputs)))
    done = wait_for_job(http, second["links"]["self"])
    assert wait_for_job(http, first["links"]["self"])["counts"]["cached"] == 0
    assert done["counts"] == {"succeeded": 200, "failed": 0, "pending": 0, "cached": 200}
    assert results(http, second) == list(reversed(inputs))
    assert chunks_run(echo_worker, second["id"]) == 0


def test_items_waiting_on_a_cancelled_job_are_computed_for_their_own(http, api, echo_worker):
    inputs = unique(400)
    owner = submit(http, api, inputs)
    waiter = submit(http, api, inputs)
    http.delete(owner["links"]["self"])
    cancelled = wait_for_job(http, owner["links"]["self"])
    done = wait_for_job(http, waiter["links"]["self"])
    assert cancelled["counts"]["failed"] > 0, "the cancel came too late to test anything"
    assert done["counts"]["succeeded"] == 400 and done["counts"]["failed"] == 0
    assert results(http, waiter) == inputs
