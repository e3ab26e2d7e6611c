"""The GPU benchmark reads the worker's NVML gauges and NVML itself alike (NVML faked at its boundary)."""

from __future__ import annotations

import torch

from batchery.cli.redis_server import free_port
from batchery.monitoring.worker_exporter import WorkerExporter
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


class RunsOutOfMemory(torch.nn.Module):
    """A text model whose device has room for two items: a larger batch raises what CUDA raises."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.stack([attention_mask.sum(1), input_ids[:, 1]], dim=1).float()


def test_the_oom_check_finds_the_splits_the_batcher_logs(tmp_path, caplog):
    import logging

    from batchery.models import hf
    from batchery.models.registry import BUILTINS, ModelSpec
    from batchery.retry import RetryPolicy, run_isolated
    from batchery.runtimes.text import TextEncoder
    from batchery.runtimes.torch import TorchRuntime
    from benchmarks.gpu import checks

    encoder = TextEncoder(hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json", 16)
    runtime = TorchRuntime(ModelSpec(name="tight", runtime="torch"), "cpu", RunsOutOfMemory(), encoder)
    with caplog.at_level(logging.INFO, logger="batchery.retry.isolate"):
        run_isolated(lambda batch: runtime.infer(runtime.prepare(batch)), ["a"] * 8, RetryPolicy(retries=0))
    log_file = tmp_path / "oom.log"
    log_file.write_text("\n".join(caplog.messages) + "\nan unrelated line: a batch of 3 failed (boom)\n")
    assert checks.splits_in_log(log_file) == [8, 4, 4]  # 8 and both its halves do not fit; quarters of 2 do
