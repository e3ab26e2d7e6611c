"""A worker SIGKILLed mid-job loses nothing: its unacknowledged chunks come back and finish elsewhere."""

from __future__ import annotations

import dataclasses
import signal
import time

import pytest
import requests

from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import wait_for_job


@pytest.mark.slow
def test_sigkilled_worker_mid_job_every_item_succeeds_exactly_once(settings, session_dir):
    chaos = dataclasses.replace(settings, visibility_timeout_s=3)
    victim = WorkerProcess(chaos, ["echo-chaos"], "victim", session_dir / "victim-worker.log").start()
    survivor = WorkerProcess(chaos, ["echo-chaos"], "survivor", session_dir / "survivor-worker.log").start()
    try:
        with ApiServer(chaos) as api:
            http = requests.Session()
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo-chaos", "inputs": list(range(5000)), "cache": False}).json()
            deadline = time.monotonic() + 60
            while http.get(job["links"]["self"]).json()["counts"]["succeeded"] < 500:
                assert time.monotonic() < deadline, "the job never got going"
                time.sleep(0.05)
            victim.process.send_signal(signal.SIGKILL)
            status = wait_for_job(http, job["links"]["self"], timeout_s=90)
            assert status["status"] == "completed"
            assert status["counts"] == {"succeeded": 5000, "failed": 0, "pending": 0, "cached": 0}
            results = http.get(job["links"]["results"], params={"limit": 5000}).json()["results"]
            assert [r["index"] for r in results] == list(range(5000))
            assert [r["output"] for r in results] == list(range(5000))
            assert "received" in victim.log_tail(400), "the victim must have held chunks when it was killed"
    finally:
        victim.stop()
        survivor.stop()
