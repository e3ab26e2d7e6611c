"""Flower behind basic auth, as `batchery up` starts it, watching a real worker on the suite's broker."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from batchery.cli.processes import flower_argv, flower_env
from batchery.cli.redis_server import free_port

USER, PASSWORD = "ops", "fl0wer-Pw-31"
#: The query Flower's tasks page sends for its table of every task, with their arguments and results.
DATATABLE = "draw=1&start=0&length=10&order[0][column]=0&columns[0][data]=name&order[0][dir]=desc"


def wait_answering(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"flower exited:\n{log.read_text()[-2000:]}"
        try:
            requests.get(f"{url}/healthcheck", timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"flower did not answer:\n{log.read_text()[-2000:]}")


def workers_listed(url: str, timeout_s: float = 30) -> dict:
    """Flower's /api/workers, refreshed until a worker has answered its broadcast."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = requests.get(f"{url}/api/workers", params={"refresh": 1}, auth=(USER, PASSWORD), timeout=30)
        assert response.status_code == 200, response.text
        if response.json() or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.5)


@pytest.mark.slow
def test_flower_wants_basic_auth_and_lists_the_batchery_worker(settings, echo_worker, tmp_path):
    flower_settings = dataclasses.replace(settings, flower_port=free_port(), flower_basic_auth=f"{USER}:{PASSWORD}")
    argv = flower_argv(flower_settings)
    assert not any(PASSWORD in arg for arg in argv), "credentials stay off the command line"
    log = tmp_path / "flower.log"
    env = {**os.environ, **flower_settings.as_env(), **flower_env(flower_settings)}
    process = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://{flower_settings.host}:{flower_settings.flower_port}"
    try:
        wait_answering(url, process, log)
        assert requests.get(f"{url}/", timeout=10).status_code == 401
        assert requests.get(f"{url}/", auth=(USER, "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
        assert requests.get(f"{url}/", auth=(USER, PASSWORD), timeout=10).status_code == 200
        for page, answer_with_credentials in [(f"/tasks/datatable?{DATATABLE}", 200), ("/task/no-such-task", 404)]:
            assert requests.get(f"{url}{page}", timeout=10).status_code == 401, page
            assert requests.get(f"{url}{page}", auth=(USER, PASSWORD), timeout=10).status_code == answer_with_credentials
        workers = workers_listed(url)
        ours = [name for name in workers if name.startswith(f"{echo_worker.name}@")]
        assert ours, f"no {echo_worker.name}@ worker in {sorted(workers)}"
        queues = {q["name"] for q in workers[ours[0]]["active_queues"]}
        assert set(echo_worker.queues) <= queues
    finally:
        process.terminate()
        process.wait(30)
    assert PASSWORD not in log.read_text()
