"""A new user's first hour with `batchery up`: the banner comes once the workers serve, other shells find the
stack by themselves, Ctrl-C is quick during a warm-up, errors are one line, a taken port is said up front, and a
`batchery/` folder in the working directory changes nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from batchery import __version__, stack
from batchery.cli.redis_server import RedisServer, free_port
from tests.cli.test_up import run_up
from tests.helpers import wait_for_job

ROOT = Path(__file__).resolve().parents[2]
#: Only echo, whose warm-up takes a while: a banner printed before the worker is warm is seen to be early.
WARM_MODELS = """
[models.minilm]
enabled = false
[models.echo]
max_batch_size = 4
options = {batch_latency_ms = 400, warm_up_batch_sizes = [1, 2, 3]}
"""
#: A warm-up of some minutes, for Ctrl-C in the middle of it.
ENDLESS_WARM_UP = """
[models.minilm]
enabled = false
[models.echo]
max_batch_size = 12
options = {batch_latency_ms = 10000, warm_up_batch_sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}
"""


def batchery(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchery", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd or ROOT)


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any BATCHERY_ variable: what a user's new shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHERY_")}
    return {**env, "PYTHONPATH": str(ROOT), "BATCHERY_DATA_DIR": str(data_dir), **extra}


def test_version():
    done = batchery("--version")
    assert done.returncode == 0 and __version__ in done.stdout


@pytest.mark.parametrize(("env", "says"), [
    ({"BATCHERY_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}, "Redis does not answer"),
    ({"BATCHERY_CHUNK_SIZE": "many"}, "BATCHERY_CHUNK_SIZE='many': expected int"),
    ({"BATCHERY_MODELS_FILE": "/nowhere/models.toml"}, "cannot read models file /nowhere/models.toml"),
])
def test_a_failing_command_says_why_in_one_line(tmp_path, env, says):
    args = ("dlq", "retry") if "MODELS" in next(iter(env)) else ("dlq", "list")
    done = batchery(*args, env=clean_env(tmp_path, **env))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("Error: ") and says in done.stderr and "hunter2" not in done.stderr


def test_up_refuses_a_port_that_is_taken_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_up(clean_env(tmp_path), "--port", str(port), "--no-flower", timeout_s=30)
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken" in done.stdout and "--port" in done.stdout
    assert "started" not in done.stdout and "stopping" not in done.stdout and "Traceback" not in done.stdout


def test_up_refuses_to_start_beside_a_running_one_with_the_same_data_dir(tmp_path):
    stack.write(tmp_path, stack.Stack(os.getpid(), "redis://127.0.0.1:1/0", "http://127.0.0.1:1"))
    done = run_up(clean_env(tmp_path), "--port", str(free_port()), "--no-flower", timeout_s=30)
    assert done.returncode != 0 and f"(pid {os.getpid()}) already serves" in done.stdout, done.stdout
    assert "started" not in done.stdout


class Up:
    """`batchery up` as a user starts it from a folder of theirs, its output read line by line as it comes."""

    def __init__(self, tmp_path: Path, models: str, redis_url: str, *extra: str) -> None:
        self.folder = tmp_path / "work"
        (self.folder / "batchery").mkdir(parents=True)  # a clone's parent folder, say
        (self.folder / "batchery" / "__init__.py").write_text("raise ImportError('not the batchery that runs')\n")
        (self.folder / "models.toml").write_text(models)
        self.data_dir = tmp_path / "data"
        self.port, self.flower_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(self.data_dir, BATCHERY_WORKER_DEVICES="cpu", BATCHERY_WORKER_PROCESSES="1",
                        BATCHERY_WORKER_METRICS_PORT="0", BATCHERY_WORKER_HEARTBEAT_S="0.5")
        argv = [sys.executable, "-P", "-m", "batchery", "up", "--port", str(self.port), "--flower-port",
                str(self.flower_port), "--redis-url", redis_url, "--models-file", "models.toml", *extra]
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(argv, env=env, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout_s: float = 180) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [at for at, line in self.lines if text in line]
            if found:
                return found[0]
            assert self.process.poll() is None, f"batchery up exited:\n{self.output()[-4000:]}"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never came:\n{self.output()[-4000:]}")

    def ctrl_c(self, timeout_s: float = 90) -> tuple[int, float]:
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Stop it, whatever happened: Ctrl-C first, since its children run in sessions of their own and a
        SIGKILL of `batchery up` would leave them running."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", persist=False).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_up_from_a_folder_with_a_batchery_dir_serves_from_its_banner_on_and_other_shells_find_it(tmp_path, own_redis):
    up = Up(tmp_path, WARM_MODELS, own_redis.url)
    try:
        up.wait_for("batchery is up")
        answer = requests.post(f"{up.url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]}, timeout=10)
        assert answer.status_code == 202, f"the first job after the banner: {answer.text}"
        assert wait_for_job(requests.Session(), answer.json()["links"]["self"])["status"] == "completed"
        text = up.output()
        assert text.index("warming up 1 worker process") < text.index("batchery is up: 1 worker process warm (cpu0)")
        assert f"Flower  http://127.0.0.1:{up.flower_port}/ (its API open on this machine only)" in text
        flower = requests.get(f"http://127.0.0.1:{up.flower_port}/api/workers", timeout=30)
        assert flower.status_code == 200, "Flower's API answers on loopback without credentials"

        shell = clean_env(up.data_dir)  # a second shell: no BATCHERY_REDIS_URL, no port
        listed = batchery("dlq", "list", env=shell, cwd=tmp_path)
        assert listed.returncode == 0 and "0 dead letters in all" in listed.stderr, listed.stderr
        ping = subprocess.run([sys.executable, "-m", "celery", "-A", "batchery.workers", "inspect", "ping", "--timeout", "5"],
                              capture_output=True, text=True, timeout=60, env=shell, cwd=ROOT)
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
        source = tmp_path / "lines.txt"
        source.write_text("one\ntwo\n")
        submitted = batchery("submit", str(source), "--model", "echo", "--text", env=shell, cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.splitlines() == ['{"index":0,"output":"one"}', '{"index":1,"output":"two"}']
        assert stack.read(up.data_dir) is not None
        code, _ = up.ctrl_c()
    finally:
        up.kill()
    assert code == 0 and "stopped." in up.output()
    assert not stack.state_path(up.data_dir).exists(), "the state file goes with the stack"


@pytest.mark.slow
def test_ctrl_c_during_the_warm_up_stops_in_seconds(tmp_path, own_redis):
    up = Up(tmp_path, ENDLESS_WARM_UP, own_redis.url, "--no-flower")
    try:
        up.wait_for("warming up 1 worker process")
        deadline = time.monotonic() + 60
        while "started cpu0" not in up.output() and "cpu0" not in up.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the worker is in its warm-up now
        code, took_s = up.ctrl_c()
    finally:
        up.kill()
    assert "batchery is up" not in up.output()
    assert took_s < 12, f"Ctrl-C took {took_s:.1f}s:\n{up.output()[-3000:]}"
    assert code == 0 and "still warming up" in up.output() and "stopped." in up.output()


def test_the_console_is_text_for_a_person_at_a_terminal_and_json_otherwise(monkeypatch):
    from batchery.cli.console import for_a_person
    from batchery.settings import Settings

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert for_a_person(Settings(), {}).log_format == "text"
    assert for_a_person(Settings(), {"BATCHERY_LOG_FORMAT": "json"}).log_format == "json", "a chosen format stays"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert for_a_person(Settings(), {}).log_format == "json", "services keep JSON"


def test_flowers_api_is_open_without_auth_on_loopback_only():
    from batchery.cli.processes import flower_env
    from batchery.settings import Settings

    assert flower_env(Settings(host="127.0.0.1")) == {"FLOWER_UNAUTHENTICATED_API": "true"}
    assert flower_env(Settings(host="localhost")) == {"FLOWER_UNAUTHENTICATED_API": "true"}
    assert flower_env(Settings(host="::1")) == {"FLOWER_UNAUTHENTICATED_API": "true"}
    assert flower_env(Settings(host="0.0.0.0")) == {} and flower_env(Settings(host="10.1.2.3")) == {}
    assert flower_env(Settings(host="127.0.0.1", flower_basic_auth="u:p")) == {"FLOWER_BASIC_AUTH": "u:p"}
