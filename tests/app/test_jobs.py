"""The job endpoints through real HTTP, a real Redis and a real worker process."""

from __future__ import annotations

import uuid

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")


def submit(http, api, model: str, inputs: list, **extra) -> dict:
    response = http.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def test_submit_answers_202_with_location_and_links(http, api):
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["model"] == "echo@1" and body["total"] == 2
    assert response.headers["Location"] == body["links"]["self"]
    assert body["links"]["results"] == body["links"]["self"] + "/results"


def test_job_completes_with_outputs_in_index_order(http, api):
    inputs = ["a cat sat", {"x": [1, 2]}, 3, None, "stocks fell"]
    job = submit(http, api, "echo", inputs, metadata={"owner": "tests"})
    status = wait_for_job(http, job["links"]["self"])
    assert status["status"] == "completed"
    assert status["counts"] == {"succeeded": 5, "failed": 0, "pending": 0, "cached": 0}
    assert status["metadata"] == {"owner": "tests"}
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    results = http.get(job["links"]["results"]).json()
    assert results == {"results": [{"index": i, "output": v} for i, v in enumerate(inputs)], "next": None}


def test_ten_thousand_items_each_index_exactly_once(http, api):
    inputs = [{"i": i} for i in range(10_000)]
    job = submit(http, api, "echo@1", inputs)
    status = wait_for_job(http, job["links"]["self"], timeout_s=120)
    assert status["counts"] == {"succeeded": 10_000, "failed": 0, "pending": 0, "cached": 0}
    seen = []
    url = job["links"]["results"] + "?limit=3000"
    while url:
        page = http.get(url).json()
        seen.extend(page["results"])
        url = page["next"]
    assert [r["index"] for r in seen] == list(range(10_000))
    assert all(r["output"] == {"i": r["index"]} for r in seen)


def test_ndjson_in_and_out(http, api):
    body = b"\n".join(orjson.dumps(v) for v in ["one", "two", {"three": 3}]) + b"\n"
    response = http.post(f"{api.url}/v1/jobs?model=echo", data=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["total"] == 3
    wait_for_job(http, job["links"]["self"])
    streamed = http.get(job["links"]["results"], headers={"Accept": "application/x-ndjson"})
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in streamed.content.splitlines()]
    assert lines == [{"index": 0, "output": "one"}, {"index": 1, "output": "two"}, {"index": 2, "output": {"three": 3}}]


def test_frames_carry_every_result_as_stored_across_stream_pages(http, api):
    from batchery.store.codec import FRAMES, decode, read_frames

    inputs = [{"i": i} for i in range(2_500)]  # more than one page of the stream
    job = submit(http, api, "echo", inputs)
    wait_for_job(http, job["links"]["self"])
    streamed = http.get(job["links"]["results"], headers={"Accept": FRAMES})
    assert streamed.headers["content-type"].startswith(FRAMES)
    frames = list(read_frames(streamed.content))
    assert [index for index, _ in frames] == list(range(2_500))
    assert [decode(raw) for _, raw in frames] == [("output", value) for value in inputs]
    ndjson = http.get(job["links"]["results"], headers={"Accept": "application/x-ndjson"}).content.splitlines()
    assert [orjson.loads(line)["output"] for line in ndjson] == inputs


def test_results_pages_link_to_the_next(http, api):
    job = submit(http, api, "echo", list(range(25)))
    wait_for_job(http, job["links"]["self"])
    first = http.get(job["links"]["results"], params={"limit": 10}).json()
    assert [r["index"] for r in first["results"]] == list(range(10))
    second = http.get(first["next"]).json()
    assert [r["index"] for r in second["results"]] == list(range(10, 20))
    third = http.get(second["next"]).json()
    assert [r["index"] for r in third["results"]] == list(range(20, 25)) and third["next"] is None


def test_cancel_ends_unrun_items_with_cancelled(http, api):
    job = submit(http, api, "echo-slow", list(range(2000)))
    response = http.delete(job["links"]["self"])
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    status = wait_for_job(http, job["links"]["self"], timeout_s=60)
    assert status["status"] == "cancelled"
    counts = status["counts"]
    assert counts["pending"] == 0 and counts["succeeded"] + counts["failed"] == 2000
    assert counts["failed"] > 1000, "most items had not run yet, so most must end cancelled"
    results = [orjson.loads(line) for line in http.get(job["links"]["results"], headers={"Accept": "application/x-ndjson"}).content.splitlines()]
    assert len(results) == 2000
    errors = [r["error"] for r in results if "error" in r]
    assert len(errors) == counts["failed"] and all(e["code"] == "cancelled" for e in errors)


def test_cancel_unknown_job_is_404(http, api):
    response = http.delete(f"{api.url}/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_a_repeated_idempotency_key_returns_the_first_job_and_queues_nothing(http, api, store):
    headers = {"Idempotency-Key": "nightly-embed-2026-11-23"}
    first = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]}, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    recent = store.recent(5)
    again = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]}, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["Location"] == first.headers["Location"]
    assert store.recent(5) == recent, "the repeat must not create a job"
    other = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a"]}, headers={"Idempotency-Key": "another"})
    assert other.json()["id"] != first.json()["id"]
    assert http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": ["a"]}, headers={"Idempotency-Key": "k" * 256}).status_code == 400


def test_items_still_pending_past_the_jobs_deadline_end_with_deadline_exceeded(http, api):
    job = submit(http, api, "echo-slow", list(range(2000)), timeout_s=0.5)
    status = wait_for_job(http, job["links"]["self"], timeout_s=60)
    assert status["status"] == "completed" and status["deadline"] is not None
    counts = status["counts"]
    assert counts["pending"] == 0 and counts["succeeded"] + counts["failed"] == 2000
    assert counts["succeeded"] > 0 and counts["failed"] > 1000
    lines = http.get(job["links"]["results"], headers={"Accept": "application/x-ndjson"}).content.splitlines()
    codes = {orjson.loads(line)["error"]["code"] for line in lines if b'"error"' in line}
    assert codes == {"deadline_exceeded"}


def test_a_job_no_worker_reaches_still_finishes_at_its_deadline(http, api, store):
    stranded = uuid.uuid4().hex
    store.create(stranded, {"model": "echo-orphan", "version": "1", "total": 3, "deadline": 1.0})
    status = http.get(f"{api.url}/v1/jobs/{stranded}").json()
    assert status["status"] == "completed" and status["counts"] == {"succeeded": 0, "failed": 3, "pending": 0, "cached": 0}
    results = http.get(f"{api.url}/v1/jobs/{stranded}/results").json()["results"]
    assert [r["error"]["code"] for r in results] == ["deadline_exceeded"] * 3


def test_a_job_the_api_ends_at_its_deadline_is_counted_finished_once(http, api, store):
    labels = {"model": "echo-orphan", "status": "completed"}
    before = REGISTRY.get_sample_value("batchery_jobs_finished_total", labels) or 0
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo-orphan", "version": "1", "total": 2, "deadline": 1.0})
    for _ in range(3):
        assert http.get(f"{api.url}/v1/jobs/{job_id}").json()["status"] == "completed"
    assert REGISTRY.get_sample_value("batchery_jobs_finished_total", labels) == before + 1


@pytest.mark.parametrize("timeout", [0, -1, "soon", True, 10**9])
def test_a_bad_timeout_is_400(http, api, timeout):
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": [1], "timeout_s": timeout})
    assert response.status_code == 400 and "timeout_s" in response.json()["error"]["message"]


def test_a_results_page_past_the_last_item_is_empty(http, api):
    job = submit(http, api, "echo", [1, 2, 3])
    wait_for_job(http, job["links"]["self"])
    assert http.get(job["links"]["results"], params={"offset": 3}).json() == {"results": [], "next": None}
    assert http.get(job["links"]["results"], params={"offset": 4797}).json() == {"results": [], "next": None}
