"""Small helpers shared by the tests."""

from __future__ import annotations

import time
import uuid

import requests


def wait_for_job(http: requests.Session, url: str, timeout_s: float = 60.0, statuses: tuple[str, ...] = ("completed", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(url).json()
        if job["status"] in statuses and job["counts"]["pending"] == 0:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not finish in {timeout_s}s: {job}")
        time.sleep(0.05)


def new_job(store, total: int, model: str = "t") -> str:
    """A job record of ``total`` items, for tests that drive a batcher or the store without the API."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": model, "version": "1", "total": total})
    return job_id


def send_job(celery, store, spec, job_id: str, inputs: list, chunk_size: int) -> list[int]:
    """Send a job's items as chunks, bypassing cache and backlog (the job is created first if need be)."""
    from batchery.tasks.enqueue import Dispatcher

    if store.get(job_id) is None:
        store.create(job_id, {"model": spec.name, "version": spec.version, "total": len(inputs)})
    return Dispatcher(celery, store, chunk_size).send(spec, job_id, list(enumerate(inputs)), int(time.time()) + 3600)
