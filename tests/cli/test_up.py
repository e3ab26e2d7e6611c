"""`batchery up` runs the whole service and stops it cleanly; an embedded Redis when none is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from batchery.cli import ensure_redis
from batchery.cli.redis_server import answers, free_port
from batchery.settings import Settings
from batchery.workers.devices import cpu_cores, discover_gpus
from tests.helpers import wait_for_job


def test_embedded_redis_starts_when_nothing_answers_and_persists_in_the_data_dir(tmp_path):
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    settings, server = ensure_redis(Settings(redis_url="", data_dir=str(tmp_path)), probe_url=nothing_there)
    try:
        assert server is not None and settings.redis_url == server.url
        client = redis.Redis.from_url(settings.redis_url)
        client.set("k", "v")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert Path(client.config_get("dir")["dir"]) == tmp_path / "redis"
    finally:
        server.stop()
    assert not answers(settings.redis_url)


def test_a_configured_or_answering_redis_is_used_as_is(redis_server, tmp_path):
    settings, server = ensure_redis(Settings(redis_url=redis_server.url, data_dir=str(tmp_path)))
    assert server is None and settings.redis_url == redis_server.url
    settings, server = ensure_redis(Settings(redis_url="", data_dir=str(tmp_path)), probe_url=redis_server.url)
    assert server is None and settings.redis_url == redis_server.url


def run_up(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """`batchery up` that is expected to exit by itself; were it to start, everything it started is stopped."""
    argv = [sys.executable, "-m", "batchery", "up", *args]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"batchery up did not refuse to start:\n{output.decode()[-3000:]}")
    return subprocess.CompletedProcess(argv, process.returncode, output.decode())


@pytest.mark.parametrize("keys", [{"BATCHERY_API_KEYS": "k-up-1"}, {"BATCHERY_API_KEYS_FILE": "keys.txt"}])
def test_up_refuses_to_start_flower_bare_behind_api_keys(settings, tmp_path, keys):
    (tmp_path / "keys.txt").write_text("k-up-2\n")
    keys = {name: str(tmp_path / value) if name.endswith("_FILE") else value for name, value in keys.items()}
    env = {
        **os.environ, **settings.as_env(), **keys,
        "BATCHERY_FLOWER_BASIC_AUTH": "", "BATCHERY_PORT": str(free_port()), "BATCHERY_FLOWER_PORT": str(free_port()),
    }
    done = run_up(env)
    assert done.returncode != 0
    assert "BATCHERY_FLOWER_BASIC_AUTH" in done.stdout and "--no-flower" in done.stdout, done.stdout
    assert "started" not in done.stdout and "stopping" not in done.stdout, "nothing may be started"


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "batchery up exited early"
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError("batchery up did not become ready")


@pytest.mark.slow
def test_up_serves_jobs_and_flower_and_stops_on_ctrl_c(settings, tmp_path):
    port, flower_port = free_port(), free_port()
    env = {**os.environ, **settings.as_env()}
    argv = [sys.executable, "-m", "batchery", "up", "--port", str(port), "--flower-port", str(flower_port),
            "--redis-url", settings.redis_url, "--models-file", settings.models_file]
    log = tmp_path / "up.log"
    process = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        http = requests.Session()
        job = http.post(f"{url}/v1/jobs", json={"model": "echo", "inputs": ["a", "b"]}).json()
        assert wait_for_job(http, job["links"]["self"])["status"] == "completed"
        assert requests.get(f"http://127.0.0.1:{flower_port}/", timeout=10).status_code == 200
        gpus = discover_gpus()
        expected = [f"gpu{g.index}" for g in gpus] or [f"cpu{k}" for k in range(cpu_cores())]
        deadline = time.monotonic() + 120
        while True:  # /readyz needs one worker per model; the rest of the pool may still be warming up
            pool = {w["hostname"].split("@")[0]: w for w in http.get(f"{url}/v1/workers").json()["workers"]}
            if set(expected) <= set(pool) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(expected) <= set(pool), "one process per GPU, else a CPU pool of one process per core"
        assert all(pool[name]["threads"] == max(1, cpu_cores() // len(expected)) for name in expected)
        banner = [f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{flower_port}/"]
        deadline = time.monotonic() + 10  # the banner's watch looks every 0.25 s, after the last heartbeat
        while not all(line in log.read_text() for line in banner) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(line in log.read_text() for line in banner), log.read_text()[-3000:]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert "stopped." in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
