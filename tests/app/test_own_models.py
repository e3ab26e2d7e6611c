"""Your own models end to end: tiny BERT folders of each task named in a models file, exported and served by a
real worker, through HTTP, Celery, the batcher and ONNX Runtime, answering as sentence-transformers and
transformers do; bad inputs are refused at the door."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import pytest
import requests

from batchery.settings import Settings
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import error_of, wait_for_job
from tests.tiny_models import PAIRS, TEXTS, max_difference, models_toml, reference

MODELS = {"tiny-embed": ("embedding", TEXTS), "tiny-classify": ("classification", TEXTS), "tiny-rerank": ("cross-encoder", PAIRS)}


@pytest.fixture(scope="module")
def served(settings: Settings, session_dir: Path, tiny_folders: dict[str, Path]) -> Iterator[ApiServer]:
    """A worker serving the three folders, and an API that knows them."""
    models_file = session_dir / "own-models.toml"
    models_file.write_text(models_toml(tiny_folders))
    mine = dataclasses.replace(settings, models_file=str(models_file))
    worker = WorkerProcess(mine, list(MODELS), "own-models", session_dir / "own-models-worker.log").start()
    try:
        with ApiServer(mine) as api:
            yield api
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_a_job_on_your_own_model_answers_as_its_library_does(
    model: str, served: ApiServer, http: requests.Session, tiny_folders: dict[str, Path]
) -> None:
    task, inputs = MODELS[model]
    job = http.post(f"{served.url}/v1/jobs", json={"model": model, "inputs": inputs, "cache": False})
    assert job.status_code == 202, job.text
    done = wait_for_job(http, job.json()["links"]["self"], timeout_s=120)
    assert done["counts"]["succeeded"] == len(inputs), done
    results = http.get(job.json()["links"]["results"]).json()["results"]
    assert [r["index"] for r in results] == list(range(len(inputs)))
    got = [r["output"] for r in results]
    assert max_difference(got, reference(task, tiny_folders[task], inputs)) <= 1e-4


@pytest.mark.slow
def test_predict_and_the_model_list_say_the_task(served: ApiServer, http: requests.Session) -> None:
    listed = {m["name"]: m for m in http.get(f"{served.url}/v1/models").json()["models"]}
    assert {name: listed[name]["task"] for name in MODELS} == {name: task for name, (task, _) in MODELS.items()}
    assert listed["tiny-rerank"]["input"] == "pair"
    answer = http.post(f"{served.url}/v1/models/tiny-classify/predict", json={"inputs": ["hello"]})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["outputs"][0]["scores"]) == {"negative", "neutral", "positive"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, inputs, status, fragment",
    [
        ("tiny-rerank", [["a", "b"], "just a text"], 422, "inputs[1]: model 'tiny-rerank' takes a pair of texts"),
        ("tiny-rerank", [["a", "b", "c"]], 422, "inputs[0]: model 'tiny-rerank' takes a pair of texts [query, passage], got a list of 3"),
        ("tiny-rerank", [["a", 3]], 422, "inputs[0]"),
        ("tiny-rerank", [["a", "x" * 2_001]], 413, "inputs[0][1]: 2001 characters"),
        ("tiny-embed", [["a", "b"]], 422, "inputs[0]: model 'tiny-embed' takes text, got list"),
    ],
)
def test_bad_inputs_are_refused_at_the_door(
    model: str, inputs: list, status: int, fragment: str, served: ApiServer, http: requests.Session
) -> None:
    response = http.post(f"{served.url}/v1/jobs", json={"model": model, "inputs": inputs})
    code = "invalid_input" if status == 422 else "payload_too_large"
    assert fragment in error_of(response, status, code)
