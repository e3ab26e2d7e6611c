"""GPU gauges through NVML: nothing (and no error) without a driver; with NVML faked at its boundary, each reading.

This machine has no NVIDIA driver, so the first test is the real no-GPU path; the others replace only the
``pynvml`` functions the collector calls, with the types the real bindings return.
"""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from batchery.cli.redis_server import free_port
from batchery.monitoring.worker_exporter import WorkerExporter
from batchery.monitoring.nvml import GpuCollector

GIB = 1024**3
FAKE_GPUS = [
    {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-0000-aaaa",
        "util": 87,
        "used": 61 * GIB,
        "total": 80 * GIB,
        "temp": 64,
        "power_mw": 412_500,
    },
    {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-1111-bbbb",
        "util": 0,
        "used": 1 * GIB,
        "total": 80 * GIB,
        "temp": 31,
        "power_mw": None,
    },
]


def test_without_a_driver_there_are_no_gpu_families_and_no_error():
    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlInit()  # the premise: no NVML on this machine
    collector = GpuCollector()
    assert list(collector.collect()) == [] and list(collector.collect()) == []
    assert {f.name for f in collector.describe()} == {
        "batchery_gpu_utilization_ratio",
        "batchery_gpu_memory_used_bytes",
        "batchery_gpu_memory_total_bytes",
        "batchery_gpu_temperature_celsius",
        "batchery_gpu_power_watts",
    }


@pytest.fixture
def fake_nvml(monkeypatch):
    calls = {"init": 0}

    def init() -> None:
        calls["init"] += 1

    def power(handle: int) -> int:
        milliwatts = FAKE_GPUS[handle]["power_mw"]
        if milliwatts is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return milliwatts

    def temperature(handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return FAKE_GPUS[handle]["temp"]

    fakes = {
        "nvmlInit": init,
        "nvmlDeviceGetCount": lambda: len(FAKE_GPUS),
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: FAKE_GPUS[h]["name"],
        "nvmlDeviceGetUUID": lambda h: FAKE_GPUS[h]["uuid"].encode(),  # older bindings answer bytes
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=FAKE_GPUS[h]["util"], memory=0),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(
            used=FAKE_GPUS[h]["used"], total=FAKE_GPUS[h]["total"], free=0
        ),
        "nvmlDeviceGetTemperature": temperature,
        "nvmlDeviceGetPowerUsage": power,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)
    return calls


def readings(families) -> dict[tuple[str, str], float]:
    return {(f.name, s.labels["gpu"]): s.value for f in families for s in f.samples}


def test_each_device_reports_in_base_units_and_an_unsupported_reading_is_left_out(fake_nvml):
    collector = GpuCollector()
    families = list(collector.collect())
    got = readings(families)
    assert got[("batchery_gpu_utilization_ratio", "0")] == 0.87
    assert got[("batchery_gpu_memory_used_bytes", "0")] == 61 * GIB
    assert got[("batchery_gpu_memory_total_bytes", "1")] == 80 * GIB
    assert got[("batchery_gpu_temperature_celsius", "1")] == 31
    assert got[("batchery_gpu_power_watts", "0")] == 412.5
    assert ("batchery_gpu_power_watts", "1") not in got, "GPU 1 does not report power; GPU 0 still does"
    labels = {f.samples[0].labels["uuid"]: f.samples[0].labels["name"] for f in families}
    assert labels == {"GPU-0000-aaaa": "NVIDIA H100 80GB HBM3"}
    list(collector.collect())
    assert fake_nvml["init"] == 1, "NVML is initialised once, not per scrape"


def test_a_worker_exporter_serves_the_gpu_families_on_its_port(fake_nvml):
    port = free_port()
    exporter = WorkerExporter({}, "127.0.0.1", port).start()
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        exporter.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    used = {s.labels["uuid"]: s.value for s in families["batchery_gpu_memory_used_bytes"].samples}
    assert used == {"GPU-0000-aaaa": 61 * GIB, "GPU-1111-bbbb": 1 * GIB}
    assert families["batchery_gpu_temperature_celsius"].type == "gauge"
