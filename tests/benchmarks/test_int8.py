"""``python -m benchmarks.int8``: runs end to end on a few texts and reports what its table and README cite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchery.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_small_int8_benchmark_reports_speed_and_agreement(tmp_path: Path, data_settings: Settings) -> None:
    out = tmp_path / "int8.json"
    argv = [
        "--items",
        "48",
        "--repeat",
        "1",
        "--batch-size",
        "16",
        "--data-dir",
        data_settings.data_dir,
        "--out",
        str(out),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.int8", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"onnx fp32", "onnx int8", "torch fp32"}
    assert all(r["items"] == 48 and r["items_per_s"] > 0 for r in report["results"].values())
    assert report["ratios_to_onnx_fp32"]["onnx fp32"] == 1.0
    assert report["agreement"]["torch fp32 vs onnx fp32"]["min_cosine"] > 0.9999
    assert 0.99 <= report["agreement"]["onnx int8 vs onnx fp32"]["mean_cosine"] < 0.9999
    assert report["int8_copy"]["int8_mb"] < 0.7 * report["int8_copy"]["fp32_mb"]
    assert "onnx int8" in done.stdout and "items/s ratio" in done.stdout
