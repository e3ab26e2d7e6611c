"""The GPU benchmark reads the worker's NVML gauges and NVML itself alike (NVML faked at its boundary)."""

from __future__ import annotations

from batchery.cli.redis_server import free_port
from batchery.monitoring.exporter import WorkerExporter
from benchmarks.gpu import device, targets
from tests.monitoring.test_nvml import FAKE_GPUS, GIB, fake_nvml  # noqa: F401 (the fixture)


def test_the_gauges_a_worker_serves_name_the_device_nvml_sees(fake_nvml):  # noqa: F811
    port = free_port()
    exporter = WorkerExporter({}, "127.0.0.1", port).start()
    try:
        gauges = device.summarize_gauges(device.scrape([f"http://127.0.0.1:{port}/metrics"]))
    finally:
        exporter.stop()
    reading = device.nvml_reading(0)

    assert reading["name"] == FAKE_GPUS[0]["name"] and reading["utilization_pct"] == 87
    assert reading["memory_used_mb"] == round(61 * GIB / 1e6, 1)
    assert gauges["device_names"] == [FAKE_GPUS[0]["name"]]
    assert gauges["max_by_sample"]["batchery_gpu_memory_used_bytes"] == 61 * GIB

    results = {
        "device_kind": "cuda",
        "load": {"items_per_s": 60_000.0},
        "after_warmup": {"nvml": reading, "metrics_gauges": gauges},
        "during_load": {"metrics_gauges": gauges},
        "worker": {"pinned_to": "0", "reports": [{"cuda_visible_devices": "0"}]},
    }
    checked = targets.evaluate(results)
    for name in ("metrics_device_name", "metrics_memory_used_after_warmup", "metrics_utilization_during_load",
                 "worker_cuda_visible_devices", "throughput"):
        assert checked[name]["passed"] is True, (name, checked[name])
    assert checked["oom_split_and_complete"]["passed"] is False  # no OOM check ran


def test_without_nvml_the_device_is_the_cpu():
    assert device.gpu_count() == 0 and device.resolve("auto") == "cpu" and device.nvml_reading(0) is None
