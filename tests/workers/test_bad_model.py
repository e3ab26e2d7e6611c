"""A model that cannot load is a configuration error: it is marked unavailable, with why, and the worker
serves the others instead of dying (and being restarted for ever). `batchery up` refuses it before starting."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job

MODELS = """
[models.echo-fine]
runtime = "echo"
input = "json"
max_wait_ms = 1

[models.broken]
runtime = "onnx"
input = "tensor"
path = "/nowhere/broken.onnx"
"""


@pytest.mark.slow
def test_a_model_that_fails_to_load_leaves_the_others_served(settings, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    mine = dataclasses.replace(settings, models_file=str(models))
    worker = WorkerProcess(mine, ["echo-fine", "broken"], "half", tmp_path / "half.log").start()
    http = requests.Session()
    try:
        with ApiServer(mine) as api:
            ready = http.get(f"{api.url}/readyz")
            assert ready.status_code == 503
            reason = ready.json()["checks"]["unavailable"]["broken"]
            assert list(reason) == [worker.name + "@" + os.uname().nodename] or len(reason) == 1
            assert "/nowhere/broken.onnx" in next(iter(reason.values()))
            assert "broken" in ready.json()["error"]["message"] and "could not load it" in ready.json()["error"]["message"]
            model = http.get(f"{api.url}/v1/models/broken").json()
            assert model["live_workers"] == 0 and "/nowhere/broken.onnx" in next(iter(model["unavailable"].values()))
            assert http.post(f"{api.url}/v1/jobs", json={"model": "broken", "inputs": [[1.0]]}).status_code == 503
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo-fine", "inputs": list(range(50))}).json()
            assert wait_for_job(http, job["links"]["self"])["counts"]["succeeded"] == 50
        time.sleep(1)
        assert worker.process.poll() is None, "the worker lives on"
        log = worker.log_path.read_text()
        assert "model broken@1 could not be loaded" in log
    finally:
        assert worker.stop() == 0


def test_up_refuses_a_models_file_naming_missing_files_before_starting_anything(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    env = {**os.environ, "BATCHERY_MODELS_FILE": str(models), "BATCHERY_DATA_DIR": str(tmp_path / "data"), "BATCHERY_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "batchery", "up", "--no-flower"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "model 'broken' on cpu: path '/nowhere/broken.onnx' does not exist" in done.stderr
    assert "started" not in done.stderr + done.stdout
