"""A stack of the recovery tests' own: a Redis they may kill, workers they may kill, the API over HTTP."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
import requests

from batchery import keys
from batchery.cli.redis_server import RedisServer
from batchery.settings import Settings
from tests.conftest import ApiServer, WorkerProcess

MODELS = """
[models.echo-recovery]
runtime = "echo"
input = "json"
max_batch_size = 16
max_wait_ms = 1
description = "synthetic: echo at 20 ms a batch, for the recovery tests"
[models.echo-recovery.options]
batch_latency_ms = 20
"""


class Stack:
    """A Redis with AOF persistence on a fixed port (so it can be killed and started again), and what runs on it."""

    def __init__(self, tmp_path: Path, base: Settings, **changes: object) -> None:
        self.tmp_path = tmp_path
        self.redis_server = RedisServer(tmp_path / "redis", persist=True).start()
        models = tmp_path / "models.toml"
        models.write_text(MODELS)
        self.settings = dataclasses.replace(
            base, redis_url=self.redis_server.url, models_file=str(models), **changes  # type: ignore[arg-type]
        )
        self.client = redis.Redis.from_url(self.redis_server.url)
        self.workers: list[WorkerProcess] = []
        self.pools: list[subprocess.Popen[bytes]] = []
        self.api: ApiServer | None = None
        self.http = requests.Session()

    def worker(self, name: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(self.settings, ["echo-recovery"], name, self.tmp_path / f"{name}.log", env).start()
        self.workers.append(worker)
        return worker

    def pool(self, processes: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``batchery worker`` as an operator runs it: a supervised CPU pool, ready once every process is live."""
        full = {
            **os.environ, **self.settings.as_env(), **(env or {}),
            "BATCHERY_WORKER_PROCESSES": str(processes), "BATCHERY_WORKER_DEVICES": "cpu",
        }
        log = (self.tmp_path / "pool.log").open("ab")
        argv = [sys.executable, "-m", "batchery", "worker", "--models", "echo-recovery"]
        process = subprocess.Popen(argv, env=full, stdout=log, stderr=subprocess.STDOUT)
        self.pools.append(process)
        for slot in range(processes):
            probe = WorkerProcess(self.settings, ["echo-recovery"], f"cpu{slot}", self.tmp_path / "pool.log")
            probe.process = process
            probe.wait_live(180)
        return process

    def pool_log(self) -> str:
        return (self.tmp_path / "pool.log").read_text(errors="replace")

    def serve(self) -> ApiServer:
        self.api = ApiServer(self.settings).__enter__()
        return self.api

    def submit(self, inputs: list, **extra: object) -> dict:
        response = self.http.post(f"{self.api.url}/v1/jobs", json={"model": "echo-recovery", "inputs": inputs, **extra})
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job: dict) -> dict | None:
        """The job's document, or None while the API cannot answer (Redis is down)."""
        response = self.http.get(job["links"]["self"])
        return response.json() if response.status_code == 200 else None

    def wait(self, job: dict, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            doc = self.job(job)
            if doc is not None and doc["status"] in ("completed", "cancelled", "failed") and doc["counts"]["pending"] == 0:
                return doc
            assert time.monotonic() < deadline, f"job did not finish in {timeout_s}s: {doc}"
            time.sleep(0.1)

    def wait_progress(self, job: dict, succeeded: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while (doc := self.job(job)) is None or doc["counts"]["succeeded"] < succeeded:
            assert time.monotonic() < deadline, f"the job never got going: {doc}"
            time.sleep(0.02)

    def outputs(self, job: dict, total: int) -> list:
        results = self.http.get(job["links"]["results"], params={"limit": total}).json()["results"]
        assert [r["index"] for r in results] == list(range(total))
        return [r.get("output", r.get("error")) for r in results]

    def kill_redis(self) -> None:
        self.redis_server.process.send_signal(signal.SIGKILL)
        self.redis_server.process.wait()

    def start_redis(self) -> None:
        self.redis_server.start(timeout_s=30)

    def leftovers(self) -> dict[str, list[str]]:
        """Whatever the machinery should have cleaned up and has not."""
        found: dict[str, list[str]] = {}
        for name, pattern in {
            "in-flight claims": f"{keys.cache_prefix()}*:inflight",
            "waiter lists": f"{keys.cache_prefix()}*:waiters",
            "chunk records": f"{keys.job_prefix()}*:chunk:*",
            "claims": f"{keys.job_prefix()}*:owns:*",
        }.items():
            hits = [k.decode() for k in self.client.scan_iter(pattern, count=1000)]
            if hits:
                found[name] = hits[:5]
        for queue_index in self.client.scan_iter(keys.queued("*")):
            if self.client.zcard(queue_index):
                found.setdefault("queued chunks", []).append(queue_index.decode())
        for holding in self.client.scan_iter(keys.holding("*")):
            if self.client.scard(holding):
                found.setdefault("held chunks", []).append(holding.decode())
        if self.client.llen(keys.handoffs()):
            found["handoffs"] = [str(self.client.llen(keys.handoffs()))]
        return found

    def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until nothing is left behind: a chunk is done a moment after its job's last item is stored."""
        deadline = time.monotonic() + timeout_s
        while (left := self.leftovers()) or self.backlog():
            assert time.monotonic() < deadline, f"left behind: {left}, backlog {self.backlog()}"
            time.sleep(0.1)

    def backlog(self) -> int:
        return int(self.client.get(keys.backlog("echo-recovery")) or 0)

    def close(self) -> None:
        if self.api is not None:
            self.api.__exit__()
        for worker in self.workers:
            worker.stop()
        for pool in self.pools:
            pool.terminate()
            try:
                pool.wait(60)
            except subprocess.TimeoutExpired:
                pool.kill()
        self.redis_server.stop()


@pytest.fixture
def stack_factory(tmp_path: Path, settings: Settings) -> Iterator:
    stacks: list[Stack] = []

    def make(**changes: object) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", settings, **changes)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
