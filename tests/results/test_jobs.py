"""Result files through the API and a real worker: POST /v1/jobs asks for them, the worker writes them when the
job ends, GET /v1/jobs/<id> links them, and GET on a link streams each; the outputs then leave Redis."""

from __future__ import annotations

import dataclasses
import io
import textwrap
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pytest
import requests

from batchery import keys
from batchery.client import Client
from batchery.runtimes.echo import synthetic_vector
from batchery.settings import Settings
from tests.conftest import MODELS_TOML, ApiServer, WorkerProcess
from tests.helpers import error_of, wait_for_job
from tests.webhooks.test_webhooks import Receiver

SECRET = "whsec-result-files"
DIMS = 8
MODELS = MODELS_TOML + textwrap.dedent(
    f"""
    [models.files-embed]
    runtime = "echo"
    input = "text"
    max_batch_size = 256
    max_wait_ms = 1
    description = "synthetic: a vector per text, made from the text"
    [models.files-embed.options]
    vector_dims = {DIMS}
    dimensions = {DIMS}

    [models.files-embed-slow]
    runtime = "echo"
    input = "text"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: as files-embed, at 25 ms a batch of 8"
    [models.files-embed-slow.options]
    vector_dims = {DIMS}
    dimensions = {DIMS}
    batch_latency_ms = 25
    """
)


@pytest.fixture(scope="module")
def job_settings(own_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    models = tmp_path_factory.mktemp("result-models") / "models.toml"
    models.write_text(MODELS)
    return dataclasses.replace(own_settings, models_file=str(models), webhook_secret=SECRET)


@pytest.fixture(scope="module")
def files_worker(job_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("result-worker") / "worker.log"
    worker = WorkerProcess(job_settings, ["echo", "files-embed", "files-embed-slow"], "files", log).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def files_api(job_settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(job_settings) as server:
        yield server


def wait_for_files(http: requests.Session, url: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := http.get(url).json())["result_files"]["state"] != "written":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def fetch(http: requests.Session, found: dict) -> bytes:
    response = http.get(found["url"])
    assert response.status_code == 200 and len(response.content) == found["bytes"]
    return response.content


@pytest.mark.slow
@pytest.mark.usefixtures("files_worker")
def test_a_job_of_thousands_ends_with_jsonl_and_npy_files_of_every_item_and_its_outputs_leave_redis(
    http, files_api, own_store
):
    texts = [f"text number {i}" for i in range(4000)]
    body = {"model": "files-embed", "inputs": texts, "results": {"format": ["npy", "jsonl"]}, "cache": False}
    answer = http.post(f"{files_api.url}/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    url = answer.json()["links"]["self"]
    assert http.get(url).json()["result_files"] == {
        "state": "pending", "formats": ["jsonl", "npy"], "files": [], "outputs_released_at": None,
    }
    job = wait_for_files(http, wait_for_job(http, url)["links"]["self"])
    assert job["status"] == "completed" and job["counts"]["succeeded"] == 4000
    written = {f["kind"]: f for f in job["result_files"]["files"]}
    assert sorted(written) == ["errors", "outputs", "results"]
    assert written["outputs"]["format"] == "npy" and written["results"]["format"] == "jsonl"

    expected = np.stack([synthetic_vector(text, DIMS) for text in texts])
    lines = [orjson.loads(line) for line in fetch(http, written["results"]).splitlines()]
    assert [line["index"] for line in lines] == list(range(4000))
    assert np.array_equal(np.array([line["output"] for line in lines], dtype=np.float32), expected)
    assert np.array_equal(np.load(io.BytesIO(fetch(http, written["outputs"]))), expected)
    assert fetch(http, written["errors"]) == b""

    shards = [keys.job_outputs(job["id"], n) for n in range(keys.shard(3999) + 1)]
    assert not any(own_store.redis.exists(key) for key in shards)
    error_of(http.get(f"{url}/results"), 410, "results_in_files")


@pytest.mark.usefixtures("files_worker")
def test_a_cancelled_job_s_file_answers_every_item_with_its_output_or_cancelled(http, files_api):
    texts = [f"slow text {i}" for i in range(600)]
    body = {"model": "files-embed-slow", "inputs": texts, "results": {"format": "jsonl"}, "cache": False}
    url = http.post(f"{files_api.url}/v1/jobs", json=body).json()["links"]["self"]
    deadline = time.monotonic() + 60
    while http.get(url).json()["counts"]["succeeded"] < 16:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert http.delete(url).status_code == 200
    job = wait_for_files(http, url)
    lines = [orjson.loads(line) for line in fetch(http, job["result_files"]["files"][0]).splitlines()]
    assert [line["index"] for line in lines] == list(range(600))
    done = [line for line in lines if "output" in line]
    assert 16 <= len(done) < 600
    for line in done:
        assert np.array_equal(np.array(line["output"], dtype=np.float32), synthetic_vector(texts[line["index"]], DIMS))
    assert all(line["error"]["code"] == "cancelled" for line in lines if "output" not in line)
    final = http.get(url).json()
    assert final["counts"]["succeeded"] == len(done) and final["counts"]["failed"] == 600 - len(done)


@pytest.mark.usefixtures("files_worker")
def test_an_ndjson_job_asks_for_files_in_its_query_and_one_answered_from_the_cache_gets_them_too(http, files_api):
    body = b"\n".join(orjson.dumps({"n": i}) for i in range(50)) + b"\n"
    for run in ("computed", "cached"):
        answer = http.post(
            f"{files_api.url}/v1/jobs?model=echo&results=jsonl", data=body,
            headers={"content-type": "application/x-ndjson"},
        )
        job = wait_for_files(http, answer.json()["links"]["self"])
        lines = [orjson.loads(line) for line in fetch(http, job["result_files"]["files"][0]).splitlines()]
        assert lines == [{"index": i, "output": {"n": i}} for i in range(50)], run
    assert job["counts"]["cached"] == 50  # ended by the submission's own cache claims, not by a worker's write


@pytest.mark.parametrize(
    "results, says",
    [
        ("jsonl", "'results' must be an object"),
        ({"format": "xml"}, "unknown format 'xml'"),
        ({"format": []}, "'results.format' must be one of"),
        ({"format": ["jsonl", "jsonl"]}, "'results.format' must be one of"),
        ({"format": "jsonl", "keep": True}, "one field, 'format'"),
        ({"format": 7}, "'results.format' must be one of"),
    ],
)
def test_a_bad_results_request_is_a_400_that_says_what_is_wrong(http, files_api, results, says):
    response = http.post(f"{files_api.url}/v1/jobs", json={"model": "files-embed", "inputs": ["a"], "results": results})
    assert says in error_of(response, 400, "bad_request")


def test_npy_is_refused_for_a_model_whose_outputs_are_not_vectors(http, files_api):
    body = {"model": "echo", "inputs": [1], "results": {"format": "npy"}}
    response = http.post(f"{files_api.url}/v1/jobs", json=body)
    assert "declares none" in error_of(response, 400, "bad_request")


@pytest.mark.usefixtures("files_worker")
def test_a_job_s_webhook_is_called_once_its_result_files_are_written_and_names_them(http, files_api):
    receiver = Receiver([])
    try:
        body = {"model": "echo", "inputs": list(range(300)), "results": {"format": "jsonl"},
                "webhook": {"url": receiver.url}}
        url = http.post(f"{files_api.url}/v1/jobs", json=body).json()["links"]["self"]
        receiver.wait_calls(1, timeout_s=60)
        called = orjson.loads(receiver.calls[0][2])["job"]
    finally:
        receiver.close()
    assert called["result_files"]["state"] == "written"
    assert called["result_files"]["files"] == [
        {k: f[k] for k in ("kind", "format", "id", "bytes")} for f in http.get(url).json()["result_files"]["files"]
    ]


@pytest.mark.usefixtures("files_worker")
def test_the_client_asks_for_result_files_waits_for_them_and_downloads_them(files_api, tmp_path):
    client = Client(files_api.url, api_key="")
    texts = [f"client text {i}" for i in range(300)]
    job = client.submit("files-embed", texts, results="npy", cache=False)
    found = {f["kind"]: f for f in client.result_files(job, timeout_s=60)}
    array = np.load(client.download(found["outputs"], tmp_path / "outputs.npy"))
    assert np.array_equal(array, np.stack([synthetic_vector(text, DIMS) for text in texts]))
    assert client.download(found["errors"], tmp_path / "errors.jsonl").read_bytes() == b""
