"""Small helpers shared by the tests."""

from __future__ import annotations

import time
import uuid
from typing import Iterator

import requests


def error_of(response: requests.Response, status: int, code: str) -> str:
    """The message of an error answer, once it is checked to be the error document with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error["message"]


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


def in_pieces(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """A generator body, so that requests sends it with ``Transfer-Encoding: chunked`` and no length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def ndjson_numbers(total_bytes: int) -> bytes:
    """NDJSON number lines, exactly ``total_bytes`` long: cut anywhere, the last line is still a number."""
    lines, size, n = [], 0, 1000
    while size + len(str(n)) + 1 <= total_bytes - 8:
        lines.append(str(n))
        size += len(str(n)) + 1
        n += 1
    lines.append("9" * (total_bytes - size - 1))
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) == total_bytes
    return body
