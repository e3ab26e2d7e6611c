"""Your own model folder exported to ONNX: cached per weights and task, checked against PyTorch before it is
kept, and refused with a ConfigError when the two disagree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchery.errors import ConfigError
from batchery.models import hf
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.runtimes.text import TextEncoder
from batchery.settings import Settings
from tests.tiny_models import TEXTS


def classifier(tiny_folders: dict[str, Path], name: str = "tiny-classify") -> ModelSpec:
    return ModelSpec(name=name, runtime="onnx", path=str(tiny_folders["classification"]),
                     options={"source": "hf", "task": "classification"})


def test_the_export_is_cached_under_the_data_dir_and_reused(tiny_folders: dict[str, Path], data_settings: Settings) -> None:
    import onnx

    spec = classifier(tiny_folders)
    onnx_path, tokenizer_path = hf.artifacts(spec, data_settings)
    assert onnx_path.is_relative_to(data_settings.data_path / "models" / "tiny-classify")
    assert tokenizer_path == tiny_folders["classification"] / "tokenizer.json"
    written = onnx_path.stat().st_mtime_ns
    load_runtime(spec, "cpu", data_settings).close()
    assert hf.artifacts(spec, data_settings)[0] == onnx_path and onnx_path.stat().st_mtime_ns == written
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output] == [["batch", 3]]
    assert hf.cache_key(tiny_folders["classification"], "classification") != hf.cache_key(tiny_folders["classification"])


def test_the_check_measures_what_clients_get(tiny_folders: dict[str, Path], data_settings: Settings) -> None:
    """The export agrees with its own PyTorch model, and the same check sees a model whose weights moved."""
    import torch

    spec = classifier(tiny_folders)
    onnx_path, _ = hf.artifacts(spec, data_settings)
    batch = TextEncoder(tiny_folders["classification"] / "tokenizer.json", 48).encode(TEXTS)
    model = hf.reference_model(spec)
    assert hf.export_difference(spec, onnx_path, model, batch) <= hf.EXPORT_TOLERANCE
    with torch.no_grad():
        model.model.classifier.bias.add_(0.01)
    assert hf.export_difference(spec, onnx_path, model, batch) == pytest.approx(0.01, abs=1e-4)


def test_an_export_that_disagrees_is_refused_and_not_kept(
    tiny_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tolerance no export meets stands for an export that disagrees: the model is refused, nothing cached."""
    monkeypatch.setattr(hf, "EXPORT_TOLERANCE", -1.0)
    settings = Settings(data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"model 'refused': its ONNX export differs from PyTorch by .*\(runtime = 'torch' serves"):
        load_runtime(classifier(tiny_folders, "refused"), "cpu", settings)
    assert [p.name for p in (tmp_path / "models" / "refused").rglob("*") if p.is_file()] == [".lock"]


def test_the_torch_runtime_serves_the_folder_without_exporting(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    spec = ModelSpec(name="on-torch", runtime="torch", path=str(tiny_folders["embedding"]), options={"source": "hf"})
    runtime = load_runtime(spec, "cpu", Settings(data_dir=str(tmp_path)))
    vectors = np.stack(runtime.infer(runtime.prepare(runtime.preprocess(TEXTS))))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not (tmp_path / "models").exists()


def test_a_folder_lacking_the_task_s_weights_is_a_config_error(tiny_folders: dict[str, Path]) -> None:
    spec = ModelSpec(name="headless", runtime="torch", path=str(tiny_folders["embedding"]),
                     options={"source": "hf", "task": "classification"})
    with pytest.raises(ConfigError, match=r"lacks weights \['classifier.bias', 'classifier.weight'\] for a classification model"):
        hf.reference_model(spec)
