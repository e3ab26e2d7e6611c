"""Chaos through real processes: a worker whose batches fail at random still ends every item well."""

from __future__ import annotations

import uuid

import pytest
import requests

from batchery.cli.redis_server import free_port
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job
from tests.monitoring.test_pipeline_metrics import scrape, value


@pytest.mark.slow
def test_at_a_transient_fault_rate_of_0_3_every_item_succeeds_and_retries_are_counted(settings, session_dir):
    port = free_port()
    env = {
        "BATCHERY_FAULT_TRANSIENT_RATE": "0.3",
        "BATCHERY_RETRY_ATTEMPTS": "10",
        "BATCHERY_RETRY_BASE_S": "0.001",
        "BATCHERY_WORKER_METRICS_PORT": str(port),
    }
    worker = WorkerProcess(settings, ["echo-flaky"], "chaos-03", session_dir / "chaos-03-worker.log", env).start()
    inputs = [f"{uuid.uuid4().hex[:8]}-{i}" for i in range(2000)]
    http = requests.Session()
    try:
        with ApiServer(settings) as api:
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo-flaky", "inputs": inputs}).json()
            status = wait_for_job(http, job["links"]["self"], timeout_s=120)
            results = http.get(job["links"]["results"], params={"limit": 2000}).json()["results"]
        families = scrape(f"http://127.0.0.1:{port}")
    finally:
        worker.stop()
    assert status["counts"] == {"succeeded": 2000, "failed": 0, "pending": 0, "cached": 0}
    assert [r["output"] for r in results] == inputs
    retries = value(families, "batchery_retries_total", model="echo-flaky")
    injected = value(families, "batchery_faults_injected_total", model="echo-flaky", fault="transient")
    assert retries and retries > 0
    assert injected == retries, "every injected fault was retried, and nothing else was"
