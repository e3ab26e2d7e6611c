"""The pipeline benchmark times work done, not the result cache, and compares equal item counts.

Its phases run against a private stack here and every job they sent is read back from that stack's Redis: a
job with ``cached > 0`` was (partly) answered from the cache, and its time says nothing about the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from batchery.settings import Settings
from benchmarks import phases, pipeline
from benchmarks.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The benchmark turns SIGTERM and SIGINT into exceptions, as a command should; the suite keeps its own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def echo_stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path / "logs", tmp_path / "data") as stack:
        yield stack


@pytest.fixture
def minilm_stack(tmp_path: Path, data_settings: Settings) -> Iterator[Stack]:
    """The session's data folder, so that the minilm ONNX export is made once for the whole suite."""
    with Stack(tmp_path / "logs", Path(data_settings.data_dir)) as stack:
        yield stack


def jobs_sent(stack: Stack) -> list[dict[str, Any]]:
    """Every job in the stack's Redis, warm-up jobs included, as the store reads them."""
    store = stack.settings.job_store()
    return store.get_many(store.recent(1000))


def test_echo_phase_computes_every_item_it_times_beside_plain_celery(echo_stack):
    api = echo_stack.start_api()
    sizes = dataclasses.replace(phases.Sizes.of(quick=True, repeat=2), echo=600)

    echo, plain = phases.bench_echo_against_plain(echo_stack, api, sizes, 2, "prefork", 2, 256)

    jobs = jobs_sent(echo_stack)
    assert len(jobs) == 3  # the warm-up and two timed runs
    assert all(job["status"] == "completed" and job["succeeded"] == job["total"] for job in jobs)
    assert [job["cached"] for job in jobs] == [0, 0, 0]
    assert echo["items"] == plain["items"] == 600 and echo["processes"] == 2
    assert len(echo["runs"]) == len(plain["runs"]) == 2 and plain["runs"][0]["tasks"] == 3
    assert {"api", "worker", "redis"} <= set(echo["cpu_s"]), "echo's CPU counts its API, pool and Redis"
    assert {"worker", "redis"} <= set(plain["cpu_s"]) and "api" not in plain["cpu_s"], "plain Celery has no API"


def test_minilm_phase_computes_every_item_it_times(minilm_stack):
    api = minilm_stack.start_api()
    sizes = dataclasses.replace(phases.Sizes.of(quick=True, repeat=2), minilm=64)

    minilm = phases.bench_minilm(minilm_stack, api, sizes)

    jobs = jobs_sent(minilm_stack)
    assert len(jobs) == 3
    assert [job["cached"] for job in jobs] == [0, 0, 0]
    assert minilm["pipeline"]["items"] == minilm["raw"]["items"] == 64


def test_the_int8_phase_runs_fp32_and_int8_on_the_same_pool_and_compares_their_vectors(minilm_stack):
    models_file = phases.minilm_models_file(minilm_stack, threads=None)
    minilm_stack.settings = dataclasses.replace(minilm_stack.settings, models_file=str(models_file))
    api = minilm_stack.start_api()
    sizes = dataclasses.replace(phases.Sizes.of(quick=True, repeat=1), minilm=64)

    int8 = phases.bench_int8(minilm_stack, api, sizes, processes=2)

    jobs = jobs_sent(minilm_stack)
    seen = sorted((job["model"], job.get("quantize"), job["cached"]) for job in jobs)
    assert seen == [("minilm", None, 0)] * 2 + [("minilm-int8", "int8", 0)] * 2, "a warm-up and a timed run each"
    assert int8["fp32"]["items"] == int8["int8"]["items"] == 64
    assert int8["fp32"]["processes"] == int8["int8"]["processes"] == 2
    (run,) = int8["int8"]["runs"]
    cosine = run["cosine_vs_fp32"]
    assert phases.INT8_MIN_COSINE <= cosine["min"] <= cosine["mean"] < 1.0, "close to fp32's vectors, not equal"


@pytest.mark.usefixtures("signal_handlers")
def test_quick_run_compares_equal_item_counts_with_both_plain_baselines(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    argv = ["--quick", "--skip", "minilm,minilm_int8", "--plain-pools", "prefork", "--out", str(out)]
    assert pipeline.main(argv) == 0

    document = json.loads(out.read_text())
    results = document["results"]
    echo, per_item, lists = results["echo"], results["plain"]["prefork"], results["plain_lists"]["prefork"]
    assert echo["items"] == per_item["items"] == lists["items"] > 0
    assert (per_item["task_items"], lists["task_items"]) == (1, 256)
    assert per_item["concurrency"] == lists["concurrency"] == echo["processes"], "as many worker processes a side"
    assert all(run["counts"]["cached"] == 0 for run in echo["runs"])
    ratios = [row for row in document["table"] if row["ratio"] is not None]
    assert len(ratios) == 2 and all(row["items"] == echo["items"] for row in ratios)
    assert [row["target"] for row in ratios] == ["batchery ≥ 20× this", "batchery ≥ 0.6× this"]
    printed = capsys.readouterr().out
    assert "1 item a task" in printed and "256 items a task" in printed


def test_a_ratio_over_unequal_item_counts_is_refused():
    echo = {"processes": 2, "items": 2_000, "seconds": 0.1, "items_per_s": 20_000.0}
    plain = {"pool": "prefork", "concurrency": 2, "task_items": 1, "items": 500, "seconds": 1.0, "items_per_s": 500.0}
    with pytest.raises(ValueError, match="500 items against batchery's 2000"):
        pipeline.rows({"echo": echo, "plain": {"prefork": plain}})
