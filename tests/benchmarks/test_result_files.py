"""``python -m benchmarks.result_files`` at a small size: the job with files gives its outputs' memory back, the
one without keeps it, and the files are the size their items make."""

from __future__ import annotations

import json

from batchery import keys
from benchmarks import result_files

ITEMS = 2 * keys.SHARD_ITEMS + 7
DIMS = 32


def test_a_job_with_result_files_holds_a_small_fraction_of_what_one_without_holds(tmp_path, capsys):
    out = tmp_path / "result_files.json"
    result_files.main(["--items", str(ITEMS), "--dims", str(DIMS), "--out", str(out)])
    figures = json.loads(out.read_text())["figures"]
    assert figures["without_files"]["shards_bytes"] > ITEMS * DIMS * 4
    assert figures["with_files"]["shards_after_bytes"] == 0
    assert figures["ratio_held"] < 0.05
    assert figures["file_bytes"]["outputs.npy"] == 128 + ITEMS * DIMS * 4  # a version 1.0 header, then the rows
    assert figures["file_bytes"]["errors.jsonl"] == 0 and figures["file_bytes"]["results.jsonl"] > ITEMS * DIMS * 4
    assert "ratio, with / without" in capsys.readouterr().out
