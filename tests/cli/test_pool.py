"""Planning the worker pool: which processes, on which device, with which queues and environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from batchery.cli.pool import (
    check_names_free, names_in_use, plan_pool, pool_devices, refuse_names_in_use, single_slot, threads_per_process,
)
from batchery.cli.redis_server import free_port
from batchery.store import heartbeats
from batchery.errors import ConfigError
from batchery.models.registry import load_registry
from batchery.settings import Settings
from batchery.workers.devices import Gpu

GPUS = [Gpu(0, "A", "GPU-a", 1), Gpu(1, "B", "GPU-b", 1)]

MODELS = """
[models.minilm]
devices = ["cpu"]
[models.echo-gpu1]
runtime = "echo"
input = "json"
devices = [1]
[models.echo-gpu]
runtime = "echo"
input = "json"
devices = ["cuda"]
"""


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return load_registry(str(path))


def test_auto_is_one_process_per_gpu_or_a_cpu_pool_without_one():
    assert pool_devices("auto", GPUS, 4) == [("gpu0", "cuda:0"), ("gpu1", "cuda:1")]
    assert pool_devices("auto", [], 3) == [("cpu0", "cpu"), ("cpu1", "cpu"), ("cpu2", "cpu")]
    assert pool_devices("cpu", GPUS, 2) == [("cpu0", "cpu"), ("cpu1", "cpu")]
    assert pool_devices("1, cuda:0,cpu,1", GPUS, 1) == [("gpu1", "cuda:1"), ("gpu0", "cuda:0"), ("cpu0", "cpu")]


@pytest.mark.parametrize(("devices", "fragment"), [("2", "NVML reports 2 GPU"), ("tpu", "auto, cpu or GPU")])
def test_devices_that_are_not_there_are_config_errors(devices, fragment):
    with pytest.raises(ConfigError, match=fragment):
        pool_devices(devices, GPUS, 1)


def test_each_slot_takes_the_queues_of_the_models_placed_on_its_device(registry):
    slots = plan_pool(registry, pool_devices("auto", GPUS, 1) + [("cpu0", "cpu")])
    assert [(s.number, s.name, s.device) for s in slots] == [
        (0, "gpu0", "cuda:0"), (1, "gpu1", "cuda:1"), (2, "cpu0", "cpu")
    ]
    assert slots[0].models == ("echo", "echo-gpu")
    assert slots[1].queues == tuple(
        f"batchery.{model}.{tier}" for tier in ("interactive", "standard", "bulk") for model in ("echo", "echo-gpu1", "echo-gpu")
    ), "every model's highest tier first: the order the worker asks the broker in"
    assert slots[2].models == ("minilm", "echo")


def test_a_device_with_no_model_placed_on_it_gets_no_process(registry):
    slots = plan_pool(registry, pool_devices("auto", GPUS, 1), ["echo-gpu1"])
    assert [(s.name, s.models) for s in slots] == [("gpu1", ("echo-gpu1",))]
    with pytest.raises(ConfigError, match="no device of this pool runs"):
        plan_pool(registry, [("cpu0", "cpu")], ["echo-gpu1"])


def test_a_gpu_slot_sees_only_its_gpu_and_runs_on_cuda_0(registry):
    gpu1 = plan_pool(registry, pool_devices("auto", GPUS, 1))[1]
    env = gpu1.env(Settings(worker_metrics_port=9300), threads=3)
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")
    assert env["BATCHERY_WORKER_DEVICE"] == "cuda:0"
    assert (env["BATCHERY_WORKER_THREADS"], env["BATCHERY_WORKER_METRICS_PORT"]) == ("3", "9301")
    assert Settings.from_env(env).worker_device == "cuda:0", "the child reads back what it is given"


def test_a_cpu_slot_sees_no_gpu_and_operator_settings_win(registry):
    cpu1 = plan_pool(registry, [("cpu0", "cpu"), ("cpu1", "cpu")])[1]
    env = cpu1.env(Settings(worker_metrics_port=0, worker_threads=5, chunk_size=7), threads=1)
    assert (env["CUDA_VISIBLE_DEVICES"], env["BATCHERY_WORKER_DEVICE"]) == ("", "cpu")
    assert (env["BATCHERY_WORKER_THREADS"], env["BATCHERY_WORKER_METRICS_PORT"]) == ("5", "0")
    assert env["BATCHERY_CHUNK_SIZE"] == "7", "every other setting goes along"


def test_k_processes_on_c_cores_get_c_over_k_threads_each():
    assert [threads_per_process(8, k) for k in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_a_single_named_process_refuses_models_not_placed_on_its_device(registry):
    assert single_slot(registry, "w", "cuda:0").models == ("echo", "echo-gpu")
    with pytest.raises(ConfigError, match="not placed on cpu"):
        single_slot(registry, "w", "cpu", ["echo-gpu"])


def test_a_prefix_names_every_process_of_the_pool():
    assert pool_devices("1,cpu", GPUS, 2, prefix="fast") == [("fast-gpu1", "cuda:1"), ("fast-cpu0", "cpu"), ("fast-cpu1", "cpu")]
    for bad in ("with space", "a@b", "x" * 65, "dot.ted"):
        with pytest.raises(ConfigError, match="prefix"):
            pool_devices("cpu", GPUS, 1, prefix=bad)


def test_names_a_running_process_of_this_host_holds_are_refused_and_a_dead_ones_are_not(redis_client):
    host = socket.gethostname()
    names = [f"t{uuid.uuid4().hex[:6]}-cpu{k}" for k in range(3)]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    beats = {names[0]: os.getpid(), names[1]: int(dead.stdout)}
    for name, pid in beats.items():
        heartbeats.publish(redis_client, f"{name}@{host}", {"hostname": f"{name}@{host}", "pid": pid, "ready": False}, 30)
    try:
        assert names_in_use(redis_client, names) == {names[0]: os.getpid()}, "a beat whose process died is no use"
        with pytest.raises(ConfigError, match="--prefix") as refused:
            refuse_names_in_use(redis_client, names)
        assert names[0] in refused.value.message and names[1] not in refused.value.message
        refuse_names_in_use(redis_client, names[1:])
    finally:
        for name in beats:
            heartbeats.withdraw(redis_client, f"{name}@{host}")


def test_names_are_checked_when_redis_answers_and_a_pool_without_redis_yet_still_starts(settings, redis_client, caplog):
    host = socket.gethostname()
    name = f"t{uuid.uuid4().hex[:6]}-cpu0"
    heartbeats.publish(redis_client, f"{name}@{host}", {"hostname": f"{name}@{host}", "pid": os.getpid()}, 30)
    try:
        with pytest.raises(ConfigError, match=name):
            check_names_free(settings.effective_redis_url, [name])
        check_names_free(f"redis://127.0.0.1:{free_port()}/0", [name])  # nothing listens there
        assert "could not check" in caplog.text
    finally:
        heartbeats.withdraw(redis_client, f"{name}@{host}")


def start_pool_process(settings: Settings, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "batchery", "worker", "--devices", "cpu", "--processes", "1", "--models", "echo", "--prefix", prefix]
    env = {**os.environ, **settings.as_env(), "BATCHERY_WORKER_METRICS_PORT": "0"}
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_beat(redis_client, hostname: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while (beat := next((b for b in heartbeats.read_workers(redis_client) if b["hostname"] == hostname), None)) is None:
        assert time.monotonic() < deadline, f"no heartbeat from {hostname}"
        time.sleep(0.1)
    return beat


@pytest.mark.slow
def test_a_second_pool_under_the_same_names_is_refused_and_one_with_its_own_prefix_runs(settings, redis_client, tmp_path):
    first, second = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    host = socket.gethostname()
    running = start_pool_process(settings, first, tmp_path / "first.log")
    others: list[subprocess.Popen[bytes]] = []
    try:
        beat = wait_beat(redis_client, f"{first}-cpu0@{host}")
        same = start_pool_process(settings, first, tmp_path / "same.log")
        others.append(same)
        assert same.wait(60) != 0, "refused"
        log = (tmp_path / "same.log").read_text()
        assert f"{first}-cpu0 (pid {beat['pid']})" in log and "--prefix" in log
        assert wait_beat(redis_client, f"{first}-cpu0@{host}")["pid"] == beat["pid"], "the first pool is untouched"
        apart = start_pool_process(settings, second, tmp_path / "apart.log")
        others.append(apart)
        assert wait_beat(redis_client, f"{second}-cpu0@{host}")["pid"] != beat["pid"]
    finally:
        for process in (*others, running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
