"""``python -m benchmarks.chaos --quick`` runs end to end: its figures are in the JSON and no item was lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_chaos_benchmark_reports_its_ratios_and_every_item_succeeds(tmp_path):
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    faults, kill = report["faults"], report["kill"]

    assert 0 < faults["ratio"] < 10 and 0 < faults["expected_ratio"] <= 1
    assert kill["ratio"] > 0 and isinstance(kill["extra_s"], float)
    assert isinstance(kill["beyond_lost_capacity_s"], float)
    assert report["settings"]["visibility_timeout_s"] == 600, "recovery without a short visibility timeout"
    assert report["settings"]["fault_handoff_rate"] > 0
    assert report["shared"]["all_exactly_once"] and report["shared"]["runs"]
    assert [row["ratio"] is not None for row in report["table"]] == [False, True, False, True]

    assert faults["all_exactly_once"] and kill["all_exactly_once"]
    assert faults["dead_letters"] == 0
    runs = [p[k] for p in faults["pairs"] for k in ("steady", "faulty")]
    runs += [p[k] for p in kill["pairs"] for k in ("undisturbed", "killed")]
    for run in runs:
        assert run["status"] == "completed"
        assert run["counts"]["succeeded"] == run["items"] and run["counts"]["failed"] == 0
        n = run["items"]
        assert run["results"] == {"ok": n, "failed": 0, "wrong": 0, "unique": n, "lines": n}
    for pair in kill["pairs"]:
        assert pair["killed"]["victim_chunks_received"] > 0, "the killed worker must have held chunks"
        assert pair["killed"]["done_when_killed"] < pair["killed"]["items"]
    assert "SIGKILLed" in done.stdout and "exactly once: True" in done.stdout
