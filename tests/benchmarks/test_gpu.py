"""``python -m benchmarks.gpu`` end to end on the CPU, with tiny numbers: every figure lands in the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_on_the_cpu_and_records_every_figure(
    fp16_weights: Path, data_settings, tmp_path: Path
) -> None:
    out = tmp_path / "gpu"
    argv = [
        sys.executable, "-m", "benchmarks.gpu", str(out), "--device", "cpu", "--weights", str(fp16_weights),
        "--data-dir", data_settings.data_dir, "--items", "240", "--job-size", "120", "--clients", "2",
        "--api-workers", "1", "--api-threads", "4", "--concurrency", "4", "--warmup-items", "16",
        "--check-items", "8", "--predict-requests", "8", "--plain-seconds", "1", "--plain-concurrency", "1",
        "--plain-window", "2",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHERY_")}
    finished = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    doc = json.loads((out / "gpu.json").read_text())
    assert doc["device_kind"] == "cpu" and doc["settings"]["worker_device"] == "cpu"
    for phase in ("load", "host"):
        assert doc[phase]["items"] == 240 and doc[phase]["items_per_s"] > 0
        assert 0.999 < doc[phase]["norm_min"] <= doc[phase]["norm_max"] < 1.001
        assert doc[phase]["cpu_us_per_item"]["worker"] > 0
    assert doc["plain"]["items"] > 0 and doc["plain"]["pool"] == "prefork"
    assert doc["targets"]["ratio_vs_plain_celery"]["value"] > 0
    assert doc["predict"]["requests"] == 8 and 0 < doc["predict"]["p50_ms"] <= doc["predict"]["p99_ms"]
    assert doc["agreement"]["passed"] and doc["agreement"]["vs_fp32_original_weights"]["items"] == 8
    assert doc["targets"]["cosine_min_vs_fp32"]["passed"] is True
    report = doc["worker"]["reports"][0]
    assert report["device"] == "cpu" and "cuda_visible_devices" in report
    assert doc["worker"]["model_document"]["runtime"] == "torch"
    assert "no CUDA device" in doc["oom"]["skipped"]
    assert {"after_warmup", "during_load", "after_load", "machine", "table"} <= set(doc)
    assert doc["targets"]["throughput"]["passed"] is None  # a GPU target: not applicable on the CPU
    assert "minilm: batchery" in (out / "table.txt").read_text()
    assert (out / "logs" / "models.yaml").is_file()
