"""The model list, the synchronous predict endpoint, and readiness."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ApiServer, WorkerProcess


@pytest.mark.usefixtures("echo_worker")
def test_models_lists_every_model_with_its_batching_and_workers(http, api):
    models = {m["name"]: m for m in http.get(f"{api.url}/v1/models").json()["models"]}
    assert {"minilm", "echo", "echo-slow", "echo-orphan"} <= set(models)
    echo = models["echo"]
    assert echo["version"] == "1" and echo["runtime"] == "echo" and echo["synthetic"] is True
    assert echo["max_batch_size"] == 64 and echo["max_wait_ms"] == 2.0
    assert echo["serving"] is True and echo["live_workers"] >= 1 and echo["device"] == ["cpu"]
    assert models["echo-slow"]["max_batch_size"] == 8
    assert models["echo-orphan"]["serving"] is False and models["echo-orphan"]["live_workers"] == 0
    assert models["minilm"]["synthetic"] is False and models["minilm"]["runtime"] == "onnx"


@pytest.mark.usefixtures("echo_worker")
def test_predict_goes_through_the_batcher_and_answers_outputs(http, api):
    response = http.post(f"{api.url}/v1/models/echo/predict", json={"inputs": ["a", {"b": 1}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "echo@1", "outputs": ["a", {"b": 1}]}


@pytest.mark.usefixtures("echo_worker")
def test_predict_past_its_timeout_is_504(http, settings_with):
    impatient = settings_with(predict_timeout_s=0.05)
    with ApiServer(impatient) as server:
        inputs = [f"{uuid.uuid4()}" for _ in range(640)]  # 80 batches of 20 ms: no loaded machine ends them in time
        response = http.post(f"{server.url}/v1/models/echo-slow/predict", json={"inputs": inputs})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


def test_readyz_names_models_without_a_live_worker(http, api, echo_worker):
    response = http.get(f"{api.url}/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "no_live_worker"
    assert "echo-orphan" in body["error"]["message"] and "echo," not in body["error"]["message"]
    assert body["checks"]["models"]["echo"] is True and body["checks"]["models"]["echo-orphan"] is False


def test_readyz_is_200_when_every_model_is_served(http, settings, session_dir, echo_worker, minilm_worker):
    orphan = WorkerProcess(settings, ["echo-orphan", "echo-tiers", "echo-chaos", "echo-flaky", "echo-store", "echo-oom"], "orphan", session_dir / "orphan-worker.log").start()
    try:
        with ApiServer(settings) as server:
            response = http.get(f"{server.url}/readyz")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "ready"
        orphan.stop()
        with ApiServer(settings) as server:
            response = http.get(f"{server.url}/readyz")
            assert response.status_code == 503 and "echo-orphan" in response.json()["error"]["message"]
    finally:
        orphan.stop()


def test_healthz_and_metrics(http, api):
    assert http.get(f"{api.url}/healthz").json() == {"status": "ok"}
    metrics = http.get(f"{api.url}/metrics")
    assert metrics.status_code == 200 and "batchery_jobs_submitted_total" in metrics.text
