"""The pipeline benchmark times work done, not the result cache.

Its phases run against a private stack here and every job they sent is read back from that stack's Redis: a
job with ``cached > 0`` was (partly) answered from the cache, and its time says nothing about the pipeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import pytest

from batchery.settings import Settings
from benchmarks import phases
from benchmarks.stack import Stack

pytestmark = pytest.mark.slow


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


def test_echo_phase_computes_every_item_it_times(echo_stack):
    api = echo_stack.start_api()
    sizes = dataclasses.replace(phases.Sizes.of(quick=True, repeat=2), echo=600)

    echo = phases.bench_echo(echo_stack, api, sizes, poll_s=0.02)

    jobs = jobs_sent(echo_stack)
    assert len(jobs) == 3  # the warm-up and two timed runs
    assert all(job["status"] == "completed" and job["succeeded"] == job["total"] for job in jobs)
    assert [job["cached"] for job in jobs] == [0, 0, 0]
    assert echo["items"] == 600


def test_minilm_phase_computes_every_item_it_times(minilm_stack):
    api = minilm_stack.start_api()
    sizes = dataclasses.replace(phases.Sizes.of(quick=True, repeat=2), minilm=64)

    minilm = phases.bench_minilm(minilm_stack, api, sizes, poll_s=0.02, threads=None)

    jobs = jobs_sent(minilm_stack)
    assert len(jobs) == 3
    assert [job["cached"] for job in jobs] == [0, 0, 0]
    assert minilm["pipeline"]["items"] == minilm["raw"]["items"] == 64
