"""``GET /v1/overview`` and the page around it, through real HTTP, Redis and a worker process."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ApiServer
from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("echo_worker")


def submit(http, api, model: str, inputs: list) -> dict:
    """Past the result cache: the page counts what the model computed."""
    response = http.post(f"{api.url}/v1/jobs", json={"model": model, "inputs": inputs, "cache": False})
    assert response.status_code == 202, response.text
    return response.json()


def overview_until(http, url: str, ready, timeout_s: float = 15.0) -> dict:
    """Poll the overview as the page does, until ``ready(doc)`` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        doc = http.get(url).json()
        if ready(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"overview never got there in {timeout_s}s: {doc}")
        time.sleep(0.1)


def job_in(doc: dict, job_id: str) -> dict | None:
    return next((job for job in doc["jobs"] if job["id"] == job_id), None)


def test_a_finished_job_shows_its_counts_and_the_models_throughput(http, api, echo_worker):
    job = submit(http, api, "echo", list(range(600)))
    wait_for_job(http, job["links"]["self"])
    echo = lambda doc: next(m for m in doc["models"] if m["name"] == "echo")  # noqa: E731
    # the worker counts into the current second, which the overview leaves out until it is complete
    doc = overview_until(http, f"{api.url}/v1/overview", lambda doc: sum(echo(doc)["series"]) >= 600)
    assert job_in(doc, job["id"]) == {
        **job_in(doc, job["id"]),
        "model": "echo", "version": "1", "status": "completed", "total": 600, "succeeded": 600, "failed": 0,
        "progress": 1.0, "links": {"self": f"/v1/jobs/{job['id']}"},
    }
    model = echo(doc)
    assert model["window_s"] == 10 and len(model["series"]) == 10
    assert model["items_per_s"] == pytest.approx(sum(model["series"]) / 10, abs=0.01)
    assert 0 < model["batch_fill"] <= 1 and model["batches_per_s"] >= 1.0  # 600 items are 10 batches of 64 at least
    assert model["live_workers"] >= 1 and model["synthetic"] is True and model["max_batch_size"] == 64
    cpu = next(d for d in doc["devices"] if d["device"] == "cpu")
    worker = next(w for w in cpu["workers"] if w["hostname"].startswith(echo_worker.name + "@"))
    assert worker["models"] == ["echo@1", "echo-slow@1"] and worker["pid"] == echo_worker.process.pid
    assert doc["links"] == {"flower": "http://127.0.0.1:5555/", "metrics": "/metrics"}


def test_a_running_job_shows_partial_progress_newest_first(http, api):
    older = submit(http, api, "echo", ["x"])
    job = submit(http, api, "echo-slow", list(range(2000)))  # 8 items per 20 ms: about 5 s
    try:
        doc = overview_until(
            http, f"{api.url}/v1/overview?jobs=5", lambda doc: 0 < (job_in(doc, job["id"]) or {}).get("progress", 0) < 1
        )
        running = job_in(doc, job["id"])
        assert running["status"] == "running" and running["started_at"] is not None
        assert running["progress"] == pytest.approx((running["succeeded"] + running["failed"]) / 2000, abs=1e-4)
        ids = [j["id"] for j in doc["jobs"]]
        assert len(ids) <= 5 and ids.index(job["id"]) < ids.index(older["id"])
    finally:
        http.delete(job["links"]["self"])


def test_bad_query_arguments_are_400(http, api):
    for query in ("jobs=0", "jobs=abc", "window_s=61"):
        response = http.get(f"{api.url}/v1/overview?{query}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_the_flower_link_follows_its_setting(http, settings_with):
    with ApiServer(settings_with(flower_url="https://flower.example.test/")) as server:
        assert http.get(f"{server.url}/v1/overview").json()["links"]["flower"] == "https://flower.example.test/"
    with ApiServer(settings_with(flower_port=5999)) as server:
        doc = http.get(f"{server.url.replace('127.0.0.1', 'localhost')}/v1/overview").json()
        assert doc["links"]["flower"] == "http://localhost:5999/"


def test_the_page_is_html_that_links_flower_metrics_and_its_script(http, api):
    response = http.get(f"{api.url}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for needle in ('href="http://127.0.0.1:5555/"', 'href="/metrics"', 'data-overview="/v1/overview"', 'src="/static/jobs.js"'):
        assert needle in page
    script = http.get(f"{api.url}/static/jobs.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/v1/overview" not in script.text  # the script reads its URL from the page, not a copy of it
    assert http.get(f"{api.url}/static/jobs.css").status_code == 200
