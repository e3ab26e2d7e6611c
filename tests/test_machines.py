"""The several-machines recipe of the README, on one box: one Redis every "machine" reaches, the same settings and
models file everywhere, `batchery api` on one, `batchery worker` on two others, each with a hostname and a data
dir of its own. Jobs are spread over both workers.

Each worker runs in a UTS namespace of its own (``unshare --uts``), so that its machine has another hostname, as
a second box would; where namespaces cannot be made, it is named apart with ``--name`` instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from batchery.cli.redis_server import RedisServer, free_port
from batchery.store.heartbeats import live_workers
from tests.conftest import GunicornApi
from tests.helpers import wait_for_job

MODELS = """
[models.minilm]
enabled = false
[models.echo]
max_batch_size = 16
max_wait_ms = 2
options = {batch_latency_ms = 20}
"""
MACHINES = ("machine-a", "machine-b")


def namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run([unshare, "--uts", "sh", "-c", "hostname probe-host"], capture_output=True, timeout=10)
    return done.returncode == 0


def worker_argv(machine: str, own_hostname: bool) -> list[str]:
    if own_hostname:
        argv = [sys.executable, "-m", "batchery", "worker", "--devices", "cpu", "--processes", "1"]
        return ["unshare", "--uts", "sh", "-c", f'hostname {machine} && exec "$@"', "sh", *argv]
    return [sys.executable, "-m", "batchery", "worker", "--name", machine]


@pytest.mark.slow
def test_workers_on_two_machines_share_one_broker_and_the_jobs(settings, tmp_path):
    broker = RedisServer(tmp_path / "redis", persist=False).start()
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    shared = dataclasses.replace(  # what every machine is given: one Redis URL, one models file, the same settings
        settings, redis_url=broker.url, models_file=str(models), chunk_size=64, port=free_port(), worker_metrics_port=0,
    )
    own_hostname = namespaces_work()
    workers: list[tuple[str, subprocess.Popen, Path]] = []
    api = None
    try:
        for machine in MACHINES:
            log = tmp_path / f"{machine}.log"
            env = {**os.environ, **shared.as_env(), "BATCHERY_DATA_DIR": str(tmp_path / machine)}
            process = subprocess.Popen(worker_argv(machine, own_hostname), env=env, stdout=log.open("wb"),
                                       stderr=subprocess.STDOUT, start_new_session=True)
            workers.append((machine, process, log))
        api = GunicornApi(dataclasses.replace(shared, data_dir=str(tmp_path / "api-machine")), tmp_path / "api.log").start()
        client = redis.Redis.from_url(broker.url)
        deadline = time.monotonic() + 180
        while len({w["host"] if own_hostname else w["hostname"] for w in live_workers(client)}) < len(MACHINES):
            for machine, process, log in workers:
                assert process.poll() is None, f"{machine}'s worker exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the workers did not both come up"
            time.sleep(0.3)
        hostnames = sorted(w["hostname"] for w in requests.get(f"{api.url}/v1/workers", timeout=10).json()["workers"])
        if own_hostname:
            assert hostnames == ["cpu0@machine-a", "cpu0@machine-b"], "each machine's pool names its worker after it"

        http = requests.Session()
        jobs = []
        for _ in range(4):
            inputs = [f"{uuid.uuid4().hex}" for _ in range(1_000)]
            answer = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": inputs})
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json())
        for job in jobs:
            assert wait_for_job(http, job["links"]["self"], timeout_s=180)["counts"]["succeeded"] == 1_000
        ran = {machine: sum(log.read_text().count(f"{job['id']}.") for job in jobs) for machine, _, log in workers}
        assert all(count > 0 for count in ran.values()), f"chunk tasks seen per machine: {ran}"
    finally:
        for _, process, _ in workers:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for _, process, _ in workers:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        if api is not None:
            api.stop()
        broker.stop()
