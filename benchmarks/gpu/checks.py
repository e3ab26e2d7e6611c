"""The checks beside the load: single-item latency, agreement with the float32 reference, a real out-of-memory."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import requests

from batchery.models.registry import ModelSpec
from batchery.store.codec import FRAMES, decode, read_frames
from benchmarks import corpus, gpu_weights
from benchmarks.gpu.load import check_response, wait_job

#: What :mod:`batchery.retry.isolate` logs when it splits a failing batch, and what the torch runtime
#: raises for a CUDA out-of-memory error: together, the proof that a real one took the split path.
SPLIT_LINE = re.compile(r"a batch of (\d+) failed \(.*out of memory", re.IGNORECASE)


def predict_latency(api_url: str, texts: Sequence[str], warm: int = 20) -> dict[str, Any]:
    """One item per request, one request at a time, on an idle worker: percentiles of the client's wall time."""
    http = requests.Session()
    url = f"{api_url}/v1/models/minilm/predict"
    for text in texts[:warm]:
        check_response(http.post(url, data=orjson.dumps({"inputs": [text]}), headers={"content-type": "application/json"}))
    times_ms = []
    for text in texts:
        body = orjson.dumps({"inputs": [text]})
        started = time.perf_counter()
        response = http.post(url, data=body, headers={"content-type": "application/json"})
        times_ms.append((time.perf_counter() - started) * 1000)
        check_response(response)
        if len(response.json()["outputs"][0]) != 384:
            raise RuntimeError(f"predict returned {response.text[:200]}")
    ordered = np.array(times_ms)
    return {
        "requests": len(times_ms),
        **{f"p{q}_ms": round(float(np.percentile(ordered, q)), 2) for q in (50, 90, 99)},
        "max_ms": round(float(ordered.max()), 2),
        "mean_ms": round(float(ordered.mean()), 2),
    }


def embed_through_api(
    api_url: str, texts: Sequence[str], model: str = "minilm", timeout_s: float = 300.0
) -> tuple[np.ndarray, list[Any]]:
    """One job, waited for, its results fetched as frames: (len(texts), 384) float32 in input order, NaN
    where an item failed, and the errors of the items that did."""
    http = requests.Session()
    response = http.post(
        f"{api_url}/v1/jobs", data=orjson.dumps({"model": model, "inputs": list(texts)}),
        headers={"content-type": "application/json"},
    )
    check_response(response)
    job = response.json()
    wait_job(http, job["links"]["self"], timeout_s, require_success=False)
    results = http.get(job["links"]["results"], headers={"Accept": FRAMES})
    check_response(results)
    vectors = np.full((len(texts), 384), np.nan, dtype=np.float32)
    errors = []
    for index, raw in read_frames(results.content):
        kind, value = decode(raw)
        if kind == "output":
            vectors[index] = value
        else:
            errors.append({"index": index, **value})
    return vectors, errors


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def agreement(served: np.ndarray, reference: np.ndarray, floor: float) -> dict[str, Any]:
    """Per-item cosine similarity of what was served against a reference; NaN (a missing item) fails."""
    values = np.nan_to_num(cosines(served, reference), nan=-1.0)
    return {
        "items": int(len(values)),
        "cosine_min": round(float(values.min()), 6),
        "cosine_mean": round(float(values.mean()), 6),
        "below_floor": int((values < floor).sum()),
        "max_abs_diff": round(float(np.nan_to_num(np.abs(served - reference), nan=1.0).max()), 6),
        "passed": bool(values.min() >= floor),
    }


def cpu_reference(spec: ModelSpec, weights: Path, texts: Sequence[str]) -> np.ndarray:
    """float32 on the CPU, from the folder's (float16) weights upcast: the same numbers the GPU was given."""
    return gpu_weights.reference_embeddings(gpu_weights.with_weights(spec, weights), texts)


def long_texts(count: int) -> list[str]:
    """Texts cut at 256 tokens: a full batch of them needs far more memory than one of them."""
    return [" ".join(corpus.texts(16, seed=90_000 + i)) for i in range(count)]


def splits_in_log(log_path: Path) -> list[int]:
    """Sizes of the batches that ran out of memory and were split, from the worker's log."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [int(m.group(1)) for m in SPLIT_LINE.finditer(text)]
