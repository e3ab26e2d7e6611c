"""Items that exhaust their retries land in the dead-letter store, and go back into their job on retry."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job


def dlq(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchery", "dlq", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **settings.as_env()},
    )


@pytest.mark.slow
def test_exhausted_items_are_dead_lettered_then_retried_into_their_job(settings, session_dir):
    broken_env = {"BATCHERY_FAULT_TRANSIENT_RATE": "1.0", "BATCHERY_RETRY_ATTEMPTS": "2", "BATCHERY_RETRY_BASE_S": "0.001"}
    broken = WorkerProcess(settings, ["echo-flaky"], "flaky", session_dir / "flaky-worker.log", broken_env).start()
    http = requests.Session()
    with ApiServer(settings) as api:
        try:
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo-flaky", "inputs": list(range(20))}).json()
            status = wait_for_job(http, job["links"]["self"], timeout_s=60)
        finally:
            broken.stop()
        assert status["status"] == "completed" and status["counts"]["failed"] == 20
        errors = [r["error"] for r in http.get(job["links"]["results"]).json()["results"]]
        assert {e["code"] for e in errors} == {"transient_error"} and "injected" in errors[0]["message"]

        letters = http.get(f"{api.url}/v1/dead-letters", params={"model": "echo-flaky", "limit": 1000}).json()["dead_letters"]
        mine = sorted((e for e in letters if e["job_id"] == job["id"]), key=lambda e: e["index"])
        assert [(e["index"], e["input"], e["attempts"], e["error"]["code"]) for e in mine] == [(i, i, 3, "transient_error") for i in range(20)], "2 retries: 3 attempts"
        listed = dlq(settings, "list", "--model", "echo-flaky", "--limit", "1000")
        assert listed.returncode == 0 and listed.stdout.count(job["id"]) == 20

        healthy = WorkerProcess(settings, ["echo-flaky"], "healthy", session_dir / "healthy-worker.log").start()
        try:
            retried = dlq(settings, "retry", "--model", "echo-flaky")
            assert retried.returncode == 0 and "20 dead letters queued again" in retried.stdout, retried.stderr
            status = wait_for_job(http, job["links"]["self"], timeout_s=60, statuses=("completed",))
            assert status["counts"] == {"succeeded": 20, "failed": 0, "pending": 0, "cached": 0}
            outputs = [r["output"] for r in http.get(job["links"]["results"]).json()["results"]]
            assert outputs == list(range(20))
        finally:
            healthy.stop()
        assert all(e["job_id"] != job["id"] for e in http.get(f"{api.url}/v1/dead-letters").json()["dead_letters"])


def test_purge_empties_the_store(settings):
    done = dlq(settings, "purge", "--yes")
    assert done.returncode == 0 and "purged" in done.stdout
    assert "0 dead letters in all" in dlq(settings, "list").stderr
