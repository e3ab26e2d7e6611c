"""The batchery worker as an operator starts it on a GPU machine: ``batchery worker --devices auto``.

The supervisor finds the GPU through NVML and starts one worker process pinned to it
(``CUDA_VISIBLE_DEVICES``); on the CPU, ``--devices cpu --processes 1`` starts one CPU worker. The benchmark
measures the worker process itself (its pid comes from its heartbeat), and reads from the heartbeat what
the worker reports: its device, the ``CUDA_VISIBLE_DEVICES`` it was pinned to, its metrics port.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import redis

from batchery.models.registry import QUEUE_PREFIX
from batchery.settings import Settings
from batchery.tiers import TIERS
from batchery.store.heartbeats import live_workers
from benchmarks.stack import Child, Stack


@dataclasses.dataclass
class PoolWorker:
    """The supervisor (a child of the stack) and the one worker process it runs."""

    child: Child
    report: dict[str, Any]

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def pid(self) -> int:
        return int(self.report["pid"])

    @property
    def log_path(self) -> Path:
        """The supervisor's log, which holds its worker's output too."""
        return self.child.log_path

    @property
    def metrics_url(self) -> str | None:
        port = self.report.get("metrics_port")
        return f"http://127.0.0.1:{port}/metrics" if port else None


def start(
    stack: Stack, name: str, models: Sequence[str], devices: str, settings: Settings | None = None,
    timeout_s: float = 600.0,
) -> PoolWorker:
    """``batchery worker --devices <devices>`` for ``models``; ready once its worker's heartbeat is in Redis."""
    argv = [sys.executable, "-m", "batchery", "worker", "--devices", devices, "--models", ",".join(models)]
    if devices == "cpu":
        argv += ["--processes", "1"]
    child = stack.spawn(name, argv, stack.env(settings))
    queues = {f"{QUEUE_PREFIX}{m}.{tier}" for m in models for tier in TIERS}
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(stack.settings.effective_redis_url) as client:
        while True:
            serving = [w for w in live_workers(client) if queues <= set(w.get("queues", []))]
            if serving:
                return PoolWorker(child, serving[0])
            if not child.alive():
                raise RuntimeError(f"{name} exited with code {child.process.returncode}:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready in {timeout_s:.0f}s:\n{child.log_tail()}")
            time.sleep(0.2)


def stop(stack: Stack, worker: PoolWorker) -> None:
    """Stop the supervisor, which drains its worker; a worker that outlived it is ended by its own pid."""
    stack.stop(worker.name)
    try:
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes()
    except OSError:
        return  # gone, as it should be
    if b"batchery.workers" in cmdline:
        os.kill(worker.pid, signal.SIGKILL)
