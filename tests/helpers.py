"""Small helpers shared by the tests."""

from __future__ import annotations

import time

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
