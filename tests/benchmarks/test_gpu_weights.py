"""The float16 weights folder taken to the GPU machine: small enough to travel, and the same model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from batchery.models import hf
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.settings import Settings
from benchmarks import gpu_weights

from tests.benchmarks.conftest import CHECK_TEXTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(fp16_weights: Path) -> Path:
    return fp16_weights


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_folder_holds_float16_weights_small_enough_to_travel(folder: Path) -> None:
    from safetensors import safe_open

    assert 40 < gpu_weights.folder_mb(folder) < 50  # 64 MiB travel with the working tree, wheels included
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(name).dtype) for name in weights.keys()}
    assert dtypes == {"torch.float16", "torch.int64"}  # position ids stay integers


def test_the_stored_reference_is_the_float32_model_on_the_original_weights(
    folder: Path, minilm_spec: ModelSpec
) -> None:
    texts, stored = gpu_weights.load_reference(folder)
    assert texts == gpu_weights.check_texts(CHECK_TEXTS)
    assert max(len(t.split()) for t in texts) > 200  # the long ones are cut at 256 tokens
    assert stored.shape == (CHECK_TEXTS, 384) and stored.dtype == np.float32
    np.testing.assert_allclose(stored, gpu_weights.reference_embeddings(minilm_spec, texts), atol=1e-6)


def test_the_loader_reads_the_folder_and_agrees_with_the_float32_reference(
    folder: Path, minilm_spec: ModelSpec, data_settings: Settings
) -> None:
    texts, stored = gpu_weights.load_reference(folder)
    spec = dataclasses.replace(
        gpu_weights.with_weights(minilm_spec, folder),
        runtime="torch",
        options={**gpu_weights.with_weights(minilm_spec, folder).options, "tokenizer": str(folder / "tokenizer.json")},
    )
    assert hf.weights_dir(spec) == folder
    runtime = load_runtime(spec, "cpu", data_settings)
    outputs = np.stack(runtime.run(runtime.prepare(texts)))
    assert cosines(outputs, stored).min() >= 0.999
    assert np.abs(outputs - stored).max() < 5e-3
