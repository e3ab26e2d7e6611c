"""Planning the worker pool: which processes, on which device, with which queues and environment."""

from __future__ import annotations

import pytest

from batchery.cli.pool import plan_pool, pool_devices, single_slot, threads_per_process
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
