"""int8 MiniLM end to end: a worker of its own serves it through HTTP, Celery, the batcher and its int8 copy."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
import requests

from batchery import keys
from batchery.cache import cache_key
from batchery.models.registry import ModelSpec, load_registry
from batchery.runtimes.base import load_runtime
from batchery.settings import Settings
from tests.conftest import MODELS_TOML, ApiServer, WorkerProcess
from tests.helpers import wait_for_job

#: Its own name, so that its chunks go to its own queues and no fp32 minilm worker of the session takes them.
INT8_TOML = """
[models.minilm-int8]
runtime = "onnx"
version = "l6-v2"
input = "text"
max_batch_size = 32
max_batch_tokens = 4096
description = "all-MiniLM-L6-v2, int8 on the CPU"
[models.minilm-int8.options]
source = "minilm"
quantize = "int8"
max_length = 256
pooling = "mean"
normalize = true
dimensions = 384
"""


@pytest.mark.slow
def test_a_worker_serves_int8_minilm_through_the_api_under_cache_keys_of_its_own(
    settings: Settings,
    data_settings: Settings,
    minilm_spec: ModelSpec,
    redis_client: redis.Redis,
    session_dir: Path,
    tmp_path: Path,
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS_TOML + INT8_TOML)
    own = dataclasses.replace(settings, models_file=str(models_file))
    tag = uuid.uuid4().hex[:8]  # inputs no other test sent, so nothing is answered from the cache
    texts = [f"A cat sat on the mat ({tag}).", f"Stocks fell sharply ({tag}).", f"ok {tag}"]
    http = requests.Session()
    worker = WorkerProcess(own, ["minilm-int8"], "minilm-int8", session_dir / "minilm-int8-worker.log").start()
    with ApiServer(own) as api:
        try:
            listed = http.get(f"{api.url}/v1/models/minilm-int8").json()
            job = http.post(f"{api.url}/v1/jobs", json={"model": "minilm-int8", "inputs": texts}).json()
            done = wait_for_job(http, job["links"]["self"], timeout_s=120)
            results = http.get(job["links"]["results"]).json()["results"]
        finally:
            worker.stop()
    assert listed["quantize"]["cpu"] == "int8" and listed["serving"]
    assert done["quantize"] == "int8" and done["model"] == "minilm-int8"
    assert done["counts"] == {"succeeded": 3, "failed": 0, "pending": 0, "cached": 0}
    assert "serving the int8 copy" in worker.log_path.read_text()

    served = np.array([r["output"] for r in results], dtype=np.float32)
    fp32 = load_runtime(minilm_spec, "cpu", data_settings)
    expected = np.stack(fp32.run(fp32.prepare(texts)))
    assert (served * expected).sum(axis=1).min() > 0.99
    assert np.abs(served - expected).max() > 1e-3, "fp32 would agree to 1e-4: the worker served the int8 copy"

    spec = load_registry(str(models_file)).get("minilm-int8")
    fp32_spec = dataclasses.replace(spec, options={**spec.options, "quantize": "none"})
    for text in texts:
        assert redis_client.exists(keys.cache_entry(cache_key(spec, text))), "the output is cached under the int8 key"
        assert not redis_client.exists(keys.cache_entry(cache_key(fp32_spec, text)))
