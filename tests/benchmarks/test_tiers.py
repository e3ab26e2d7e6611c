"""``python -m benchmarks.tiers --quick``: the tiers' targets hold at small sizes, and every item of every
tier comes back exactly once through a SIGKILLed worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_tiers_benchmark_meets_its_targets(tmp_path):
    out = tmp_path / "tiers.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tiers", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["met"]["exactly_once"], report["kill"]
    assert report["met"]["small_job_s"], report["fair_share"]["small_s"]
    assert report["interactive_beside_bulk"]["predicts"]["all_200"]
    assert report["interactive_beside_bulk"]["predicts"]["predicts"] >= 5
    assert report["met"]["predict_p99_ms"], report["interactive_beside_bulk"]["predicts"]
    assert report["figures"]["bulk_ratio"] > 0.7, "loose here: the short quick jobs make the ratio noisy"
