"""The load: texts submitted over HTTP in jobs, every result fetched back through the API and checked.

The client runs in several processes, so that it is not the thing measured: each submits its share of the
jobs, then waits for each of them and fetches its results as binary frames (``Accept:
application/x-batchery-frames``), decoding and checking every vector. The clock runs from the first POST
to the last result checked, in the parent.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson
import requests

from batchery.store.codec import FRAMES, decode, read_frames

FINAL = ("completed", "failed", "cancelled")
POLL_FIRST_S = 0.01
POLL_BACKOFF = 0.02
POLL_MAX_S = 0.25
DIMS = 384


@dataclass(frozen=True)
class Job:
    """One job of the load: its texts and where they start in the whole list."""

    start: int
    texts: list[str]


def split(texts: Sequence[str], job_size: int) -> list[Job]:
    return [Job(start, list(texts[start : start + job_size])) for start in range(0, len(texts), job_size)]


def _warm(_: int) -> int:
    return 0


def run_client(api_url: str, model: str, jobs: list[Job]) -> dict[str, Any]:
    """One client process: submit every job it was given, then wait for each and fetch and check its results."""
    cpu_started = time.process_time()
    http = requests.Session()
    submitted = []
    for job in jobs:
        body = orjson.dumps({"model": model, "inputs": job.texts})
        response = http.post(f"{api_url}/v1/jobs", data=body, headers={"content-type": "application/json"})
        check_response(response)
        submitted.append((job, response.json()))
    submitted_at = time.time()
    checked = [_fetch(http, job, accepted) for job, accepted in submitted]
    return {
        "jobs": len(checked),
        "items": sum(c["items"] for c in checked),
        "bytes": sum(c["bytes"] for c in checked),
        "submitted_at": submitted_at,
        "norm_min": min(c["norm_min"] for c in checked),
        "norm_max": max(c["norm_max"] for c in checked),
        "polls": sum(c["polls"] for c in checked),
        "samples": [s for c in checked for s in c["samples"]],
        "cpu_s": time.process_time() - cpu_started,
    }


def _fetch(http: requests.Session, job: Job, accepted: dict[str, Any]) -> dict[str, Any]:
    polls = wait_job(http, accepted["links"]["self"])
    response = http.get(accepted["links"]["results"], headers={"Accept": FRAMES})
    check_response(response)
    vectors = np.empty((len(job.texts), DIMS), dtype=np.float32)
    seen = 0
    for index, raw in read_frames(response.content):
        kind, value = decode(raw)
        if kind != "output":
            raise RuntimeError(f"job {accepted['id']}: item {index} failed: {value}")
        vectors[index] = value
        seen += 1
    if seen != len(job.texts):
        raise RuntimeError(f"job {accepted['id']}: {seen} results for {len(job.texts)} inputs")
    norms = np.linalg.norm(vectors, axis=1)
    every = max(len(job.texts) // 4, 1)
    return {
        "items": seen,
        "bytes": len(response.content),
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "polls": polls,
        "samples": [(job.start + i, vectors[i].tolist()) for i in range(0, len(job.texts), every)],
    }


def wait_job(http: requests.Session, url: str, timeout_s: float = 1800.0, require_success: bool = True) -> int:
    """Poll a job until it ends; returns the number of polls. With ``require_success``, a failed item raises."""
    started = time.perf_counter()
    polls = 0
    while True:
        response = http.get(url)
        check_response(response)
        doc = response.json()
        polls += 1
        if doc["status"] in FINAL:
            if doc["status"] != "completed" or (require_success and doc["counts"]["failed"]):
                raise RuntimeError(f"job {doc['id']} ended {doc['status']} with counts {doc['counts']}")
            return polls
        waited = time.perf_counter() - started
        if waited > timeout_s:
            raise TimeoutError(f"job {doc['id']} did not finish in {timeout_s:.0f}s: {doc}")
        time.sleep(min(POLL_MAX_S, max(POLL_FIRST_S, POLL_BACKOFF * waited)))


def check_response(response: requests.Response) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"HTTP {response.status_code} from {response.url}: {response.text[:300]}")


class LoadClient:
    """A pool of client processes, started and warmed before the clock starts."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        list(self.pool.map(_warm, range(processes * 2)))

    def __enter__(self) -> "LoadClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)

    def run(self, api_url: str, model: str, texts: Sequence[str], job_size: int) -> dict[str, Any]:
        """Every text through the API; the wall time, the items, and what each client process saw."""
        jobs = split(texts, job_size)
        shares = [jobs[i :: self.processes] for i in range(self.processes)]
        started = time.perf_counter()
        started_at = time.time()
        futures = [self.pool.submit(run_client, api_url, model, share) for share in shares if share]
        clients = [f.result() for f in futures]
        seconds = time.perf_counter() - started
        items = sum(c["items"] for c in clients)
        if items != len(texts):
            raise RuntimeError(f"{items} results for {len(texts)} texts")
        return {
            "items": items,
            "seconds": round(seconds, 4),
            "items_per_s": round(items / seconds, 1),
            "jobs": len(jobs),
            "job_size": job_size,
            "client_processes": self.processes,
            "submit_s": round(max(c["submitted_at"] for c in clients) - started_at, 4),
            "result_bytes": sum(c["bytes"] for c in clients),
            "norm_min": min(c["norm_min"] for c in clients),
            "norm_max": max(c["norm_max"] for c in clients),
            "polls": sum(c["polls"] for c in clients),
            "client_processes_cpu_s": round(sum(c["cpu_s"] for c in clients), 3),
            "samples": sorted(s for c in clients for s in c["samples"]),
        }
