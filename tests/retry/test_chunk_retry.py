"""A chunk whose outputs Redis would not take is retried in its task, and gives up into dead letters."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job

RETRY_FAST = {"BATCHERY_CHUNK_RETRY_BASE_S": "0.05", "BATCHERY_CHUNK_RETRY_MAX_S": "0.2"}


def run_job(settings, session_dir, name: str, env: dict[str, str], total: int) -> tuple[dict, list, WorkerProcess]:
    worker = WorkerProcess(settings, ["echo-store"], name, session_dir / f"{name}-worker.log", env).start()
    http = requests.Session()
    inputs = [f"{uuid.uuid4().hex[:8]}-{i}" for i in range(total)]
    try:
        with ApiServer(settings) as api:
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo-store", "inputs": inputs}).json()
            status = wait_for_job(http, job["links"]["self"], timeout_s=90)
            results = http.get(job["links"]["results"], params={"limit": total}).json()["results"]
            letters = http.get(f"{api.url}/v1/dead-letters", params={"model": "echo-store", "limit": 1000}).json()
    finally:
        worker.stop()
    mine = [e for e in letters["dead_letters"] if e["job_id"] == job["id"]]
    return status, [results, inputs, mine], worker


@pytest.mark.slow
def test_chunks_whose_writes_fail_are_retried_until_every_item_lands_once(settings, session_dir):
    env = {"BATCHERY_FAULT_STORE_RATE": "0.3", "BATCHERY_CHUNK_RETRY_ATTEMPTS": "20", **RETRY_FAST}
    status, (results, inputs, letters), worker = run_job(settings, session_dir, "store-flaky", env, 600)
    assert status["counts"] == {"succeeded": 600, "failed": 0, "pending": 0, "cached": 0}
    assert [r["output"] for r in results] == inputs
    log = worker.log_path.read_text()
    assert "injected store fault" in log and "the store failed" in log, "no write failed, so nothing was proven"
    assert letters == []


@pytest.mark.slow
def test_a_chunk_that_exhausts_its_retries_ends_its_items_as_dead_letters(settings, session_dir):
    env = {"BATCHERY_FAULT_STORE_RATE": "1.0", "BATCHERY_CHUNK_RETRY_ATTEMPTS": "2", **RETRY_FAST}
    status, (results, inputs, letters), worker = run_job(settings, session_dir, "store-down", env, 40)
    assert status["status"] == "completed" and status["counts"]["failed"] == 40
    assert {r["error"]["code"] for r in results} == {"store_unavailable"}
    assert sorted((e["index"], e["input"], e["attempts"]) for e in letters) == [(i, inputs[i], 3) for i in range(40)]
    assert "gave up after 2 retries" in worker.log_path.read_text()
