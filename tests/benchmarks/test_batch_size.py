"""The batch size benchmark runs end to end in its quick form and writes its JSON and its chart."""

from __future__ import annotations

import json
import signal
import struct

import pytest

from benchmarks import batch_size

pytestmark = pytest.mark.slow


@pytest.fixture
def signal_handlers():
    """The benchmark turns SIGTERM and SIGINT into exceptions, as a command should; the suite keeps its own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("signal_handlers")
def test_quick_run_writes_json_and_a_png_chart(tmp_path, capsys):
    out = tmp_path / "batch_size.json"
    # a slow model (40 ms a batch) needs little CPU of the pipeline, so a busy machine cannot hide the batching
    argv = ["--quick", "--sizes", "1,8", "--clients", "4", "--items-per-request", "4", "--seconds", "1",
            "--batch-latency-ms", "40", "--out", str(out)]
    assert batch_size.main(argv) == 0

    document = json.loads(out.read_text())
    one, eight = document["results"]
    assert (one["max_batch_size"], eight["max_batch_size"]) == (1, 8)
    assert one["items_per_batch"] == 1.0 and 1.0 < eight["items_per_batch"] <= 8.0
    assert eight["items_per_s"] > 2 * one["items_per_s"] > 0  # 16 items in flight: batches of 8 run ~7× faster
    assert 0 < one["latency_ms"]["p50"] <= one["latency_ms"]["p95"] <= one["latency_ms"]["p99"]
    assert one["requests"] * 4 == one["items"]

    png = (tmp_path / "batch_size.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] >= 800
    printed = capsys.readouterr().out
    assert "max_batch_size" in printed and "× p95" in printed
