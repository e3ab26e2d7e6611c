"""The float16 weights folder, built once for the benchmark tests (with a small reference test set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchery.models.registry import ModelSpec
from benchmarks import gpu_weights

CHECK_TEXTS = 16


@pytest.fixture(scope="session")
def fp16_weights(tmp_path_factory: pytest.TempPathFactory, minilm_spec: ModelSpec) -> Path:
    out = tmp_path_factory.mktemp("weights") / "minilm-fp16"
    gpu_weights.build(out, CHECK_TEXTS, minilm_spec)
    return out
