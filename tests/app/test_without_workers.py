"""A model whose workers an autoscaler starts on demand (KEDA scaling them to zero): with
``BATCHERY_ACCEPT_WITHOUT_WORKERS`` a job is taken while no worker serves its model, waits in Redis, shows in
the backlog the autoscaler reads, and runs once a worker starts. The API's own readiness stays 200 throughout."""

from __future__ import annotations

import re

import pytest
import requests

from batchery.cli.redis_server import free_port
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job

MODEL = "echo-orphan"


def gauge(text: str, name: str, model: str) -> float:
    values = re.findall(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return sum(float(v) for v in values)


def test_without_the_setting_a_job_for_a_model_nobody_serves_is_refused_and_readyz_api_is_200(http, api):
    assert http.post(f"{api.url}/v1/jobs", json={"model": MODEL, "inputs": [1]}).status_code == 503
    assert http.get(f"{api.url}/readyz").status_code == 503
    assert http.get(f"{api.url}/readyz/api").json() == {"status": "ready", "checks": {"redis": True}}


@pytest.mark.slow
def test_a_job_taken_with_no_worker_is_counted_in_the_backlog_and_runs_when_one_starts(
    http, settings_with, session_dir
):
    settings = settings_with(accept_without_workers=True)
    inputs = list(range(3 * settings.chunk_size))
    with ApiServer(settings) as server:
        submitted = http.post(f"{server.url}/v1/jobs", json={"model": MODEL, "inputs": inputs})
        assert submitted.status_code == 202, submitted.text
        assert http.get(f"{server.url}/readyz/api").status_code == 200
        assert http.get(f"{server.url}/readyz").status_code == 503, "no worker serves it: the stack is not ready"
        metrics = http.get(f"{server.url}/metrics").text
        assert gauge(metrics, "batchery_backlog_items", MODEL) >= len(inputs)
        assert gauge(metrics, "batchery_queue_messages", MODEL) < 3, "the lane held a chunk back: the broker misses it"
        worker = WorkerProcess(settings, [MODEL], "scaled", session_dir / "scaled-worker.log").start()
        try:
            job = wait_for_job(http, submitted.json()["links"]["self"], timeout_s=60)
            assert job["status"] == "completed" and job["counts"]["succeeded"] == len(inputs)
            results = http.get(f"{submitted.json()['links']['results']}?limit={len(inputs)}").json()["results"]
            assert [r["output"] for r in results] == inputs
            assert gauge(http.get(f"{server.url}/metrics").text, "batchery_backlog_items", MODEL) == 0
        finally:
            worker.stop()


def test_readyz_api_is_503_when_redis_does_not_answer(http, settings_with):
    with ApiServer(settings_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")) as down:
        response = requests.get(f"{down.url}/readyz/api", timeout=10)
        assert response.status_code == 503 and response.json()["error"]["code"] == "redis_unavailable"
