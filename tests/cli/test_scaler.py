"""A scaling CPU pool with real worker processes on the test Redis: it grows under a burst and shrinks when idle,
and a process it drains mid-burst loses nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from batchery import keys
from batchery.cli.pool import Slot, start_pool
from batchery.cli.redis_server import free_port
from batchery.cli.scaler import PoolScaler
from batchery.cli.supervisor import Supervisor
from batchery.scaling import ScalePolicy
from batchery.settings import Settings
from batchery.store.heartbeats import live_workers
from tests.conftest import ApiServer
from tests.helpers import wait_for_job

MODELS = """
[models.echo-scale]
runtime = "echo"
input = "json"
max_batch_size = 8
max_wait_ms = 1
description = "synthetic: 8 items per 50 ms, for the scaling tests' own pools"
[models.echo-scale.options]
batch_latency_ms = 50
"""
POOL = socket.gethostname()


@pytest.fixture
def scale_settings(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    return dataclasses.replace(
        settings,
        models_file=str(models),
        chunk_size=16,
        worker_devices="cpu",
        worker_min_processes=1,
        worker_max_processes=3,
        worker_target_backlog_per_process=64,
        worker_scale_up_cooldown_s=0.0,
        worker_scale_down_cooldown_s=1.5,
        worker_drain_timeout_s=30.0,
        log_format="text",
    )


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def live(client: redis.Redis) -> set[str]:
    """The pool's processes with a live heartbeat, by slot name."""
    return {w["hostname"].partition("@")[0] for w in live_workers(client) if w["hostname"].endswith("@" + POOL)} & {
        "cpu0",
        "cpu1",
        "cpu2",
    }


def gauge(http: requests.Session, api: ApiServer, state: str) -> float | None:
    """The pool's size as the API's /metrics has it."""
    text = http.get(f"{api.url}/metrics").text
    found = re.search(rf'batchery_pool_processes\{{pool="{re.escape(POOL)}",state="{state}"\}} ([\d.]+)', text)
    return float(found.group(1)) if found else None


def submit(http: requests.Session, api: ApiServer, tag: str, items: int) -> tuple[dict, list[str]]:
    inputs = [f"{tag}-{i}" for i in range(items)]
    response = http.post(f"{api.url}/v1/jobs", json={"model": "echo-scale", "inputs": inputs, "cache": False})
    assert response.status_code == 202, response.text
    return response.json(), inputs


def assert_exactly_once(http: requests.Session, job: dict, inputs: list[str]) -> None:
    status = wait_for_job(http, job["links"]["self"], timeout_s=120)
    assert status["status"] == "completed", status
    assert status["counts"] == {"succeeded": len(inputs), "failed": 0, "pending": 0, "cached": 0}
    results = http.get(job["links"]["results"], params={"limit": len(inputs)}).json()["results"]
    assert [r["index"] for r in results] == list(range(len(inputs))), "every index once"
    assert [r["output"] for r in results] == inputs


@pytest.mark.slow
def test_the_pool_grows_under_a_burst_and_shrinks_when_idle_and_every_item_ends_once(
    scale_settings, redis_client, tmp_path
):
    """`batchery worker --min-processes 1 --max-processes 3`: 1 -> 3 under a burst, 3 -> 1 once idle, seen in
    the API's gauge and the pool's log; jobs sent while it grows and while it shrinks end exactly once."""
    env = {**os.environ, **scale_settings.as_env()}
    for name in ("BATCHERY_WORKER_MIN_PROCESSES", "BATCHERY_WORKER_MAX_PROCESSES"):
        env.pop(name)
    log_path = tmp_path / "pool.log"
    argv = [
        sys.executable,
        "-m",
        "batchery",
        "worker",
        "--models",
        "echo-scale",
        "--min-processes",
        "1",
        "--max-processes",
        "3",
    ]
    pool = subprocess.Popen(argv, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    http = requests.Session()
    try:
        with ApiServer(scale_settings) as api:
            wait_until(lambda: live(redis_client) == {"cpu0"}, 120, "the pool's first process")
            assert gauge(http, api, "serving") == 1.0
            jobs = [submit(http, api, f"burst{n}", 600) for n in range(4)]
            wait_until(lambda: gauge(http, api, "serving") == 3.0, 30, "the pool to grow to 3")
            jobs.append(submit(http, api, "growing", 300))
            wait_until(lambda: live(redis_client) == {"cpu0", "cpu1", "cpu2"}, 120, "the new processes to serve")
            jobs.append(submit(http, api, "grown", 300))
            for job, inputs in jobs:
                assert_exactly_once(http, job, inputs)
            wait_until(lambda: gauge(http, api, "serving") == 1.0, 30, "the pool to shrink to 1")
            late = submit(http, api, "shrinking", 200)
            wait_until(lambda: gauge(http, api, "draining") == 0.0, 60, "the drained processes to exit")
            assert_exactly_once(http, *late)
            assert live(redis_client) == {"cpu0"}, "the lowest slot stays; the others withdrew their heartbeats"
            text = http.get(f"{api.url}/metrics").text
            # at least the one 1 -> 3; the late job's backlog, if the scaler sees it before cpu0 has run it (as
            # on a slow machine), rightly grows the pool again
            ups = re.search(rf'batchery_pool_scaling_events_total{{direction="up",pool="{POOL}"}} ([\d.]+)', text)
            assert ups is not None and float(ups.group(1)) >= 1.0, text[-2000:]
            assert f'batchery_pool_max_processes{{pool="{POOL}"}} 3.0' in text
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(60)
    log = log_path.read_text(errors="replace")
    assert re.search(r"scales up 1 -> 3 processes, starting cpu1, cpu2: backlog [\d,]+ items \(echo-scale", log), log[
        -3000:
    ]
    assert re.search(r"scales down 3 -> [12] processes, draining cpu2 ", log), log[-3000:]
    assert len(re.findall(r"cpu[12] \(pid \d+\) retired: exit code 0", log)) >= 2, "both drained and exited cleanly"
    assert "restarting" not in log and "did not stop in time" not in log
    assert pool.returncode == 0
    assert not redis_client.exists(keys.pool(POOL)), "a stopped pool withdraws its size"


SLOW_TO_DRAIN = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(0)))
time.sleep(60)
"""


def sleepers(supervisor: Supervisor, model: str) -> tuple[list[Slot], object]:
    """Three CPU slots whose processes take a second to drain, and how the scaler starts one."""
    slots = [Slot(n, f"cpu{n}", "cpu", (model,), ("q",)) for n in range(3)]
    return slots, lambda slot: supervisor.spawn(slot.name, [sys.executable, "-c", SLOW_TO_DRAIN], restart=True)


def test_the_scaler_starts_the_lowest_free_slots_drains_the_highest_and_never_reuses_one_still_draining(
    redis_client, caplog
):
    model = f"scale-unit-{os.getpid()}"
    supervisor = Supervisor()
    slots, launch = sleepers(supervisor, model)
    policy = ScalePolicy(1, 3, target_backlog_per_process=10, scale_up_cooldown_s=0.0, scale_down_cooldown_s=0.3)
    scaler = PoolScaler(
        supervisor, policy, slots, launch, redis_client, [model], 10.0, name=f"unit-{model}", interval_s=0.05
    )
    assert [s.name for s in scaler.start(1)] == ["cpu0"]
    supervisor.watchers.append(scaler)
    loop = Looping(supervisor)
    try:
        with caplog.at_level("INFO", logger="batchery.cli"), loop:
            redis_client.set(keys.backlog(model), 25)
            wait_until(lambda: [s.name for s in scaler.serving()] == ["cpu0", "cpu1", "cpu2"], 5, "growth to 3")
            redis_client.set(keys.backlog(model), 0)
            wait_until(lambda: [s.name for s in scaler.draining()] == ["cpu1", "cpu2"], 5, "the two highest to drain")
            redis_client.set(keys.backlog(model), 25)
            wait_until(
                lambda: "once cpu1, cpu2 has drained" in caplog.text, 5, "growth held back by the draining slots"
            )
            assert [s.name for s in scaler.serving()] == ["cpu0"], "no second process under a draining one's name"
            assert len(supervisor.children) == 3, "never more processes than the maximum, draining ones included"
            wait_until(
                lambda: [s.name for s in scaler.serving()] == ["cpu0", "cpu1", "cpu2"], 10, "growth once they left"
            )
            wait_until(lambda: b'"serving": 3' in (redis_client.get(keys.pool(scaler.name)) or b""), 5, "the record")
            record = json.loads(redis_client.get(keys.pool(scaler.name)))
            assert (record["draining"], record["downs"]) == (0, 1)
            assert record["ups"] in (2, 3), "once more at once, or one slot at a time as each finished draining"
    finally:
        redis_client.delete(keys.backlog(model))
        scaler.close()
    assert re.search(r"scales up 1 -> 3 processes, starting cpu1, cpu2: backlog 25 items", caplog.text)
    assert re.search(
        r"scales down 3 -> 1 processes, draining cpu2 \(holding 0 chunks\), cpu1 \(holding 0 chunks\)", caplog.text
    )
    assert caplog.text.count("would grow to 3 processes, once cpu1, cpu2 has drained") == 1, "said once"
    assert "scales up 1 -> 1" not in caplog.text
    assert len(re.findall(r"cpu[12] \(pid \d+\) retired: exit code 0", caplog.text)) == 2
    assert not redis_client.exists(keys.pool(scaler.name)), "closed: withdrawn"


def test_a_scaler_whose_redis_is_down_keeps_the_pool_as_it_is_and_says_so_once(caplog):
    supervisor = Supervisor()
    slots, launch = sleepers(supervisor, "m")
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    scaler = PoolScaler(supervisor, ScalePolicy(1, 3, 10, 0.0, 0.0), slots, launch, nowhere, ["m"], 5.0, interval_s=0.0)
    scaler.start(2)
    try:
        with caplog.at_level("INFO", logger="batchery.cli.scaler"):
            for now in (1.0, 2.0, 3.0):
                scaler(now)
        assert [s.name for s in scaler.serving()] == ["cpu0", "cpu1"]
        assert caplog.text.count("Redis does not answer") == 1
    finally:
        supervisor.stop(5)


class Looping:
    """``Supervisor.run`` on a thread, as `batchery worker` runs it on its main one; stopped with a drain."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.thread = threading.Thread(target=supervisor.run, daemon=True)

    def __enter__(self) -> "Looping":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.request_stop()
        self.thread.join(10)
        self.supervisor.stop(30)

    def call(self, action) -> None:
        """Run ``action(now)`` once on the supervisor's loop, where the scaler changes the children."""
        done = threading.Event()

        def once(now: float) -> None:
            if not done.is_set():
                action(now)
                done.set()

        self.supervisor.watchers.append(once)
        assert done.wait(5), "the supervisor's loop did not turn"


@pytest.mark.slow
def test_processes_drained_mid_burst_finish_or_hand_back_their_chunks_and_nothing_is_lost(
    scale_settings, redis_client, caplog
):
    """Three processes busy with one job; two are scaled away while each holds chunks. They drain as at a
    shutdown (warm: batches in hand finish, chunks not started go back to the queue) and the one left
    finishes the job: every item once. The cooldowns are too long for the policy to act on its own here."""
    settings = dataclasses.replace(
        scale_settings, worker_processes=3, worker_scale_up_cooldown_s=3600.0, worker_scale_down_cooldown_s=3600.0
    )
    supervisor = Supervisor({**os.environ, **settings.as_env()})
    http = requests.Session()
    with caplog.at_level("INFO", logger="batchery.cli"), ApiServer(settings) as api, Looping(supervisor) as loop:
        pool = start_pool(supervisor, settings, ["echo-scale"])
        try:
            assert [s.name for s in pool.started] == ["cpu0", "cpu1", "cpu2"]
            wait_until(lambda: live(redis_client) == {"cpu0", "cpu1", "cpu2"}, 120, "three processes to serve")
            job, inputs = submit(http, api, "mid-burst", 1200)

            def holding(name: str) -> int:
                return redis_client.scard(keys.holding(f"{name}@{POOL}"))

            wait_until(lambda: holding("cpu1") and holding("cpu2"), 60, "both processes to hold chunks")
            loop.call(lambda now: pool.resize(1, "the test drains two busy processes", now))
            wait_until(lambda: set(supervisor.children) == {"cpu0"}, 60, "the two to drain and exit")
            assert_exactly_once(http, job, inputs)
            assert not holding("cpu1") and not holding("cpu2"), "nothing left held by the processes that left"
        finally:
            pool.close()
    drained = re.search(
        r"scales down 3 -> 1 processes, draining cpu2 \(holding (\d+) chunks\), cpu1 \(holding (\d+) chunks\)",
        caplog.text,
    )
    assert drained, caplog.text[-3000:]
    assert int(drained.group(1)) + int(drained.group(2)) > 0, "the processes drained held work when asked to stop"
    assert len(re.findall(r"cpu[12] \(pid \d+\) retired: exit code 0", caplog.text)) == 2, caplog.text[-3000:]


def test_bounds_that_cannot_hold_stop_the_command_with_one_line(scale_settings):
    env = {**os.environ, **scale_settings.as_env()}
    argv = [sys.executable, "-m", "batchery", "worker", "--min-processes", "3", "--max-processes", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Error: a CPU pool runs between 1 and its maximum processes: min 3, max 2" in done.stderr
    assert "Traceback" not in done.stderr
