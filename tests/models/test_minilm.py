"""The MiniLM weights, the PyTorch reference built from them, and the cached ONNX export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from batchery.errors import ConfigError
from batchery.models import hf
from batchery.models.weights import weights_file
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.runtimes.text import TextEncoder
from batchery.settings import Settings

PARAGRAPH = (
    "Rivers shape the land they cross. Over thousands of years, water carries sand and stone downstream, "
    "cutting valleys, building deltas and leaving fertile plains where farmers have grown food since the "
    "first cities were founded. "
)
#: The last text is past 128 tokens, where the shipped tokenizer.json would truncate it, and short of 256.
TEXTS = ["Rivers", "A river carves a valley.", "The recipe needs two eggs and some flour.", PARAGRAPH * 4]


def with_weights(spec: ModelSpec, folder: Path) -> ModelSpec:
    return dataclasses.replace(spec, options={**spec.options, "weights": str(folder)})


def embed(spec: ModelSpec, texts: list[str]) -> np.ndarray:
    encoder = TextEncoder(hf.weights_dir(spec) / "tokenizer.json", spec.options["max_length"])
    return hf.reference_embeddings(hf.reference_model(spec), encoder.encode(texts))


@pytest.fixture(scope="module")
def reference(minilm_spec: ModelSpec) -> np.ndarray:
    return embed(minilm_spec, TEXTS)


def test_the_weights_default_to_the_installed_package(minilm_spec: ModelSpec) -> None:
    folder = hf.weights_dir(minilm_spec)
    assert folder.name == "model" and folder.parent.name == hf.PACKAGE
    assert weights_file(folder).name == "model.safetensors"


def test_a_weights_folder_without_the_model_files_is_a_config_error(minilm_spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        hf.weights_dir(with_weights(minilm_spec, tmp_path))


def test_the_reference_agrees_with_sentence_transformers(minilm_spec: ModelSpec, reference: np.ndarray) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(hf.weights_dir(minilm_spec)), device="cpu")
    expected = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert np.abs(reference - expected).max() < 1e-5


def test_the_export_is_cached_and_reused(minilm_spec: ModelSpec, data_settings: Settings) -> None:
    onnx_path, tokenizer_path = hf.artifacts(minilm_spec, data_settings)
    assert onnx_path.is_relative_to(data_settings.data_path / "models" / "minilm")
    assert tokenizer_path.name == "tokenizer.json"
    written = onnx_path.stat().st_mtime_ns
    assert hf.artifacts(minilm_spec, data_settings)[0] == onnx_path
    load_runtime(minilm_spec, "cpu", data_settings)
    assert onnx_path.stat().st_mtime_ns == written
    assert [p.name for p in onnx_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_the_exported_graph_takes_any_batch_and_length(minilm_spec: ModelSpec, data_settings: Settings) -> None:
    import onnx

    graph = onnx.load(str(hf.artifacts(minilm_spec, data_settings)[0]), load_external_data=False).graph
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:2]] == ["batch", "tokens"], value.name
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]


def test_the_cache_key_follows_the_weights(minilm_spec: ModelSpec, tmp_path: Path) -> None:
    original = hf.weights_dir(minilm_spec)
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).symlink_to(original / name)
    (tmp_path / "config.json").write_text((original / "config.json").read_text().replace('"gelu"', '"gelu_new"'))
    assert hf.cache_key(original) == hf.cache_key(original)
    assert hf.cache_key(tmp_path) != hf.cache_key(original)


def test_a_folder_of_fp16_weights_gives_nearly_the_same_embeddings(
    minilm_spec: ModelSpec, reference: np.ndarray, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    original = hf.weights_dir(minilm_spec)
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).symlink_to(original / name)
    weights = load_file(str(original / "model.safetensors"))
    save_file({k: v.half() for k, v in weights.items()}, str(tmp_path / "model.fp16.safetensors"))
    spec = with_weights(minilm_spec, tmp_path)
    assert weights_file(tmp_path).name == "model.fp16.safetensors"
    embeddings = embed(spec, TEXTS)
    assert np.abs(embeddings - reference).max() < 5e-3
    assert (embeddings * reference).sum(axis=1).min() > 0.999
