"""`batchery worker --devices auto` on a machine with two GPUs, NVML faked at its boundary and nothing else.

The supervisor, its `celery worker` children, Redis and the API are all real. The children are pinned to
GPUs that have no CUDA behind them, so the models here are synthetic echo models, which never touch CUDA.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
import requests

from batchery.cli.redis_server import free_port
from batchery.settings import Settings
from batchery.store.heartbeats import live_workers
from tests.conftest import ApiServer
from tests.helpers import wait_for_job

pytestmark = pytest.mark.slow

FAKE_NVML = Path(__file__).parent / "fake_nvml"
HOST = socket.gethostname()

POOL_MODELS = textwrap.dedent(
    """
    [models.minilm]
    enabled = false
    [models.echo]
    enabled = false

    [models.echo-gpu0]
    runtime = "echo"
    input = "json"
    devices = [0]
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: placed on GPU 0 only"

    [models.echo-gpu1]
    runtime = "echo"
    input = "json"
    devices = ["cuda:1"]
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: placed on GPU 1 only"

    [models.echo-pool]
    runtime = "echo"
    input = "json"
    max_batch_size = 16
    max_wait_ms = 1
    description = "synthetic: on every device, bigger batches on GPUs"
    [models.echo-pool.options]
    batch_latency_ms = 40
    [models.echo-pool.on.cuda]
    max_batch_size = 32
    options = {warm_up_batch_sizes = [4]}
    """
)


class Pool:
    """`batchery worker` as a process of its own, seeing two fake GPUs."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        path = os.pathsep.join(p for p in (str(FAKE_NVML), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, **settings.as_env(), "PYTHONPATH": path, "FAKE_NVML_GPUS": "2"}
        self.process: subprocess.Popen[bytes] | None = None
        self.redis = redis.Redis.from_url(settings.effective_redis_url)

    def start(self, timeout_s: float = 120.0) -> "Pool":
        argv = [sys.executable, "-m", "batchery", "worker", "--devices", "auto"]
        out = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_for(lambda: {"gpu0", "gpu1"} <= set(self.workers()), timeout_s)
        return self

    def workers(self) -> dict[str, dict]:
        """Live heartbeats of this machine's pool, by node name (``gpu0``); the session's other workers aside."""
        return _by_node(live_workers(self.redis))

    def wait_for(self, condition, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, f"the pool exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"timed out:\n{self.log_tail()}"
            time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def celery(self, *args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "batchery.workers", *args, "--json", "--timeout", "5"],
            capture_output=True, text=True, timeout=60, env=self.env,
        )
        assert done.returncode == 0, done.stderr
        replies = json.loads(done.stdout.strip().splitlines()[-1])
        return {node: reply for node, (_, reply) in _by_node(replies.items(), lambda item: item[0]).items()}

    def terminate(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for worker in self.workers().values():  # nothing may outlive the test
            os.kill(worker["pid"], signal.SIGKILL)
        return self.process.returncode


def _by_node(items, hostname=lambda worker: worker["hostname"]) -> dict:  # noqa: ANN001
    """``gpu0``, ``gpu1``... of this host: the pool's processes, not the other tests' ``echo@host`` and such."""
    found = {}
    for item in items:
        node, _, host = hostname(item).partition("@")
        if host == HOST and node.startswith("gpu"):
            found[node] = item
    return found


@pytest.fixture(scope="module")
def pool_settings(settings: Settings, session_dir: Path) -> Settings:
    models_file = session_dir / "pool-models.toml"
    models_file.write_text(POOL_MODELS)
    return dataclasses.replace(
        settings,
        models_file=str(models_file),
        worker_heartbeat_s=0.3,
        worker_heartbeat_ttl_s=1.5,
        visibility_timeout_s=5,
        worker_concurrency=4,
        worker_metrics_port=free_port(),
        worker_drain_timeout_s=30.0,
    )


@pytest.fixture(scope="module")
def pool(pool_settings: Settings, session_dir: Path) -> Iterator[Pool]:
    pool = Pool(pool_settings, session_dir / "pool.log").start()
    yield pool
    pool.terminate()


@pytest.fixture(scope="module")
def pool_api(pool_settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(pool_settings) as server:
        yield server


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_one_threads_pool_process_per_gpu_each_pinned_to_its_own(pool: Pool, pool_settings: Settings):
    workers = pool.workers()
    assert workers["gpu0"]["pid"] != workers["gpu1"]["pid"] != pool.process.pid
    for index in (0, 1):
        worker = workers[f"gpu{index}"]
        environ = environ_of(worker["pid"])
        assert environ["CUDA_VISIBLE_DEVICES"] == worker["cuda_visible_devices"] == str(index)
        assert worker["device"] == f"cuda:{index}" and worker["runtime_device"] == "cuda:0"
        assert worker["metrics_port"] == pool_settings.worker_metrics_port + index
        argv = Path(f"/proc/{worker['pid']}/cmdline").read_bytes().decode().split("\0")
        assert "--pool=threads" in argv and "--without-mingle" in argv, "no second spent asking for revoked ids"
    assert set(workers["gpu0"]["queues"]) == tier_queues("echo-gpu0", "echo-pool")
    assert set(workers["gpu1"]["queues"]) == tier_queues("echo-gpu1", "echo-pool")
    assert workers["gpu1"]["warm_batch_sizes"] == {"echo-gpu1": [8], "echo-pool": [4, 32]}, "the on.cuda table applies"


def test_celery_sees_each_gpu_worker_on_its_queues(pool: Pool):
    queues = {node: {q["name"] for q in qs} for node, qs in pool.celery("inspect", "active_queues").items()}
    assert queues == {"gpu0": tier_queues("echo-gpu0", "echo-pool"), "gpu1": tier_queues("echo-gpu1", "echo-pool")}


def test_the_api_counts_live_workers_per_model_and_per_gpu(pool: Pool, pool_api: ApiServer, http):
    models = {m["name"]: m for m in http.get(f"{pool_api.url}/v1/models").json()["models"]}
    assert set(models) == {"echo-gpu0", "echo-gpu1", "echo-pool"}
    assert models["echo-pool"]["live_workers"] == 2
    assert models["echo-pool"]["live_workers_by_device"] == {f"cuda:0@{HOST}": 1, f"cuda:1@{HOST}": 1}
    assert models["echo-gpu1"]["device"] == ["cuda:1"] and models["echo-gpu1"]["live_workers"] == 1
    listed = http.get(f"{pool_api.url}/v1/workers").json()
    pinned = {node: w["cuda_visible_devices"] for node, w in _by_node(listed["workers"]).items()}
    assert pinned == {"gpu0": "0", "gpu1": "1"}
    assert listed["devices"][f"cuda:0@{HOST}"] == listed["devices"][f"cuda:1@{HOST}"] == 1
    ready = http.get(f"{pool_api.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["live_workers"] == {"echo-gpu0": 1, "echo-gpu1": 1, "echo-pool": 2}


def test_a_job_on_a_gpu_placed_model_runs_in_that_gpus_process(pool: Pool, pool_api: ApiServer, http):
    before = pool.celery("inspect", "stats")
    job = http.post(f"{pool_api.url}/v1/jobs", json={"model": "echo-gpu1", "inputs": list(range(300))}).json()
    status = wait_for_job(http, job["links"]["self"], timeout_s=30)
    assert status["counts"] == {"succeeded": 300, "failed": 0, "pending": 0, "cached": 0}
    after = pool.celery("inspect", "stats")

    def chunks(stats: dict, node: str) -> int:
        return stats[node]["total"].get("batchery.run_chunk", 0)

    assert chunks(after, "gpu1") - chunks(before, "gpu1") == 3, "300 items in chunks of 128"
    assert chunks(after, "gpu0") == chunks(before, "gpu0")


def test_a_sigkilled_gpu_worker_comes_back_and_readyz_follows(pool: Pool, pool_api: ApiServer, http):
    victim = pool.workers()["gpu1"]
    os.kill(victim["pid"], signal.SIGKILL)

    def readyz() -> requests.Response:
        return http.get(f"{pool_api.url}/readyz")

    pool.wait_for(lambda: readyz().status_code == 503, timeout_s=10)
    body = readyz().json()
    assert body["error"]["code"] == "no_live_worker" and "echo-gpu1" in body["error"]["message"]
    assert body["checks"]["models"] == {"echo-gpu0": True, "echo-gpu1": False, "echo-pool": True}
    assert body["checks"]["live_workers_by_device"]["echo-pool"] == {f"cuda:0@{HOST}": 1}

    pool.wait_for(lambda: readyz().status_code == 200, timeout_s=60)
    back = pool.workers()["gpu1"]
    assert back["pid"] != victim["pid"] and environ_of(back["pid"])["CUDA_VISIBLE_DEVICES"] == "1"
    assert f"gpu1 (pid {victim['pid']}) died: killed by signal SIGKILL" in pool.log_path.read_text(errors="replace")
    job = http.post(f"{pool_api.url}/v1/jobs", json={"model": "echo-gpu1", "inputs": ["back"]}).json()
    assert wait_for_job(http, job["links"]["self"], timeout_s=30)["counts"]["succeeded"] == 1


def test_sigterm_drains_the_pool_and_a_new_one_finishes_the_job(pool: Pool, pool_api: ApiServer, http, session_dir):
    """Last in this module: it stops the pool."""
    total = 4000
    job = http.post(f"{pool_api.url}/v1/jobs", json={"model": "echo-pool", "inputs": list(range(total))}).json()
    deadline = time.monotonic() + 30
    while http.get(job["links"]["self"]).json()["counts"]["succeeded"] < 200:
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.05)
    assert pool.terminate() == 0, pool.log_tail()
    drain = pool.log_path.read_text(errors="replace").split("SIGTERM: stopping", 1)[1]
    assert "did not stop in time" not in drain
    assert all(re.search(rf"{node} \(pid \d+\) stopped: exit code 0", drain) for node in ("gpu0", "gpu1"))
    assert "succeeded in" in drain, "the chunks in hand finish after SIGTERM"
    assert pool.workers() == {}, "a drained worker withdraws its heartbeat"
    drained = http.get(job["links"]["self"]).json()["counts"]
    assert drained["failed"] == 0 and 0 < drained["pending"] < total, drained

    again = Pool(pool.settings, session_dir / "pool-again.log").start()
    try:
        status = wait_for_job(http, job["links"]["self"], timeout_s=60)
    finally:
        again.terminate()
    assert status["counts"] == {"succeeded": total, "failed": 0, "pending": 0, "cached": 0}
    results = http.get(job["links"]["results"], params={"limit": total}).json()["results"]
    assert [r["output"] for r in results] == list(range(total))


def tier_queues(*models: str) -> set[str]:
    return {f"batchery.{model}.{tier}" for model in models for tier in ("interactive", "standard", "bulk")}
