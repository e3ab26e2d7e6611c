"""A job whose batches overflow the device, through the API and a real worker process, still completes whole."""

from __future__ import annotations

import pytest

from batchery.store.dead_letters import DeadLetters
from tests.conftest import WorkerProcess
from tests.helpers import wait_for_job


@pytest.fixture(scope="module")
def oom_worker(settings, session_dir):
    worker = WorkerProcess(
        settings, ["echo-oom"], "oom", session_dir / "oom-worker.log", {"BATCHERY_OOM_COOLDOWN_S": "60"}
    ).start()
    yield worker
    worker.stop()


def test_every_item_of_a_job_too_big_for_the_device_lands_correct(oom_worker, http, api, redis_client):
    inputs = [{"item": i, "text": f"input number {i}"} for i in range(600)]
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo-oom", "inputs": inputs})
    assert response.status_code == 202, response.text
    job = response.json()
    status = wait_for_job(http, job["links"]["self"], timeout_s=120)
    assert status["status"] == "completed"
    assert status["counts"] == {"succeeded": 600, "failed": 0, "pending": 0, "cached": 0}, "all run by the model"
    results = http.get(job["links"]["results"], params={"limit": 1000}).json()["results"]
    assert results == [{"index": i, "output": value} for i, value in enumerate(inputs)]
    assert all(letter["job_id"] != job["id"] for letter in DeadLetters(redis_client).list(0, 10_000))
    log = oom_worker.log_tail(2000)
    assert "out of memory at a batch of 32" in log and "batch size capped at 8" in log


def test_predict_on_a_device_too_small_answers_every_input(oom_worker, http, api):
    inputs = [f"sentence {i}" for i in range(40)]
    response = http.post(f"{api.url}/v1/models/echo-oom/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == inputs and "errors" not in response.json()
