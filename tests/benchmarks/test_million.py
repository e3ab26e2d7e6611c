"""``python -m benchmarks.million`` at a smaller size: both runs complete and stream every result back, every
Redis call stays far under 100,000 arguments and no key grows with the job. The full run (a million items)
is in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchery import keys

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 3 * keys.SHARD_ITEMS * 4  # enough shards and pages that nothing is sized by luck


@pytest.mark.slow
def test_a_large_job_then_the_same_job_all_cached_stream_back_whole_in_bounded_keys_and_calls(tmp_path):
    out = tmp_path / "million.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.million", "--items", str(ITEMS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    for run in ("computed", "cached"):
        assert figures[run]["counts"]["succeeded"] == ITEMS and figures[run]["counts"]["pending"] == 0
    assert figures["cached"]["counts"]["cached"] == ITEMS, "the second run is answered wholly from the cache"
    assert figures["most_arguments_in_one_call"] < 10_000, figures["call_with_most_arguments"]
    per_shard_bytes = keys.SHARD_ITEMS * 200
    assert figures["largest_key_bytes"] < per_shard_bytes, (figures["largest_key"], figures["largest_key_bytes"])
    assert figures["api_peak_rss_bytes"] > 0 and figures["redis_peak_bytes_per_item"] > 0
