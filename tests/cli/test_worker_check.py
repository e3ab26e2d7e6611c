"""`batchery worker-check`, the workers' liveness probe, against real worker processes and a real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from batchery.cli.redis_server import free_port
from tests.conftest import WorkerProcess


def worker_check(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env()}
    argv = [sys.executable, "-m", "batchery", "worker-check", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_a_serving_worker_passes_by_its_name_and_as_any_worker_of_this_machine(settings, echo_worker):
    host = socket.gethostname()
    named = worker_check(settings, "--name", echo_worker.name)
    assert named.returncode == 0 and named.stdout.strip() == f"{echo_worker.name}@{host} ready", named
    anyone = worker_check(settings)
    assert anyone.returncode == 0 and f"{echo_worker.name}@{host} ready" in anyone.stdout, anyone
    missing = worker_check(settings, "--name", "nobody")
    assert missing.returncode == 1 and f"no live heartbeat of nobody@{host}" in missing.stderr, missing


def test_a_redis_that_does_not_answer_passes_and_says_so(settings_with):
    down = worker_check(settings_with(redis_url=f"redis://127.0.0.1:{free_port()}/0"), "--name", "echo")
    assert down.returncode == 0 and "Redis does not answer" in down.stderr and not down.stdout, down


@pytest.mark.slow
def test_a_wedged_worker_fails_once_its_heartbeat_lapses_and_passes_when_it_beats_again(settings, session_dir):
    """SIGSTOP is a worker wedged as a whole: its key outlives it by the heartbeat TTL (2 s here), no more."""
    worker = WorkerProcess(settings, ["echo"], "wedged", session_dir / "wedged-worker.log").start()
    try:
        assert worker_check(settings, "--name", "wedged").returncode == 0
        os.kill(worker.process.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        while worker_check(settings, "--name", "wedged").returncode == 0:
            assert time.monotonic() - stopped_at < settings.worker_heartbeat_ttl_s + 10, "the check never failed"
        assert time.monotonic() - stopped_at >= settings.worker_heartbeat_ttl_s - settings.worker_heartbeat_s
        os.kill(worker.process.pid, signal.SIGCONT)
        worker.wait_live(30)
        assert worker_check(settings, "--name", "wedged").returncode == 0
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
        worker.stop()
