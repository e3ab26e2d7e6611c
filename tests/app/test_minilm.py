"""The real model end to end: sentence embeddings through HTTP, Celery, the batcher and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("minilm_worker")

SENTENCES = [
    "A cat sat on the mat.",
    "A kitten was sitting on the rug.",
    "Stocks fell sharply after the central bank raised interest rates.",
    "Share prices dropped when the interest rate went up.",
    "The recipe needs two cups of flour and an egg.",
]


def test_minilm_job_gives_unit_length_embeddings_that_make_sense(http, api):
    response = http.post(f"{api.url}/v1/jobs", json={"model": "minilm", "inputs": SENTENCES})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["model"] == "minilm@l6-v2"
    assert wait_for_job(http, job["links"]["self"], timeout_s=120)["counts"] == {"succeeded": 5, "failed": 0, "pending": 0, "cached": 0}
    results = http.get(job["links"]["results"]).json()["results"]
    vectors = np.array([r["output"] for r in results], dtype=np.float32)
    assert vectors.shape == (5, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3, "cat/kitten must be closer than cat/stocks"
    assert similarity[2, 3] > similarity[2, 4] + 0.3, "stocks/share prices must be closer than stocks/recipe"


def test_minilm_predict_matches_the_job_path(http, api):
    job = http.post(f"{api.url}/v1/jobs", json={"model": "minilm", "inputs": SENTENCES[:2]}).json()
    wait_for_job(http, job["links"]["self"], timeout_s=120)
    from_job = [r["output"] for r in http.get(job["links"]["results"]).json()["results"]]
    predicted = http.post(f"{api.url}/v1/models/minilm/predict", json={"inputs": SENTENCES[:2]}).json()["outputs"]
    assert np.allclose(np.array(from_job), np.array(predicted), atol=1e-5)
