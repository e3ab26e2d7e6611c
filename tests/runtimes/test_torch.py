"""The PyTorch runtime on MiniLM and on TorchScript and torch.export models built here."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from batchery.errors import ConfigError
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.runtimes.torch import TorchRuntime
from batchery.settings import Settings

#: The tests build models with exporters torch calls deprecated; the runtimes under test are not.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def torch_spec(minilm_spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(minilm_spec, runtime="torch")


def test_minilm_matches_the_reference(
    torch_spec: ModelSpec, data_settings: Settings, sentences: list[str], reference_embeddings: np.ndarray
) -> None:
    runtime = load_runtime(torch_spec, "cpu", data_settings)
    assert isinstance(runtime, TorchRuntime)
    outputs = runtime.run(runtime.prepare(sentences))
    assert [vector.shape for vector in outputs] == [(384,)] * len(sentences)
    assert np.abs(np.stack(outputs) - reference_embeddings).max() < 1e-5


def test_cuda_without_cuda_runs_in_float32_on_the_cpu_and_says_so(
    torch_spec: ModelSpec, data_settings: Settings, sentences: list[str], reference_embeddings: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = dataclasses.replace(torch_spec, options={**torch_spec.options, "fp16": True})
    with caplog.at_level(logging.WARNING, logger="batchery.runtimes.torch"):
        runtime = load_runtime(spec, "cuda:0", data_settings)
    assert runtime.device == "cpu" and "CPU" in caplog.text
    outputs = runtime.run(runtime.prepare(sentences[:3]))
    assert np.abs(np.stack(outputs) - reference_embeddings[:3]).max() < 1e-5


class SmallMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def save_torchscript(model: torch.nn.Module, folder: Path) -> Path:
    path = folder / "mlp.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def save_exported(model: torch.nn.Module, folder: Path) -> Path:
    path = folder / "mlp.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.zeros(4, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


@pytest.mark.parametrize("save", [save_torchscript, save_exported], ids=["torchscript", "torch.export"])
def test_a_tensor_model_matches_the_module_it_was_saved_from(save, tmp_path: Path, data_settings: Settings) -> None:
    model = SmallMLP().eval()
    spec = ModelSpec(name="mlp", runtime="torch", path=str(save(model, tmp_path)), input="tensor")
    runtime = load_runtime(spec, "cpu", data_settings)
    inputs = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    outputs = runtime.run(runtime.prepare(list(inputs)))
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    assert len(outputs) == 6 and outputs[0].shape == (3,)
    assert np.abs(np.stack(outputs) - expected).max() < 1e-6


class TokenCounter(torch.nn.Module):
    """A text model that takes no token types and pools itself: the runtime must adapt to both."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([attention_mask.sum(1), (input_ids * attention_mask).sum(1)], dim=1).float()


def test_a_text_model_gets_only_the_inputs_it_declares(tmp_path: Path, data_settings: Settings) -> None:
    path = save_torchscript(TokenCounter(), tmp_path)
    spec = ModelSpec(name="counter", runtime="torch", path=str(path), input="text",
                     options={"source": "minilm", "max_length": 16})
    runtime = load_runtime(spec, "cpu", data_settings)
    counts = runtime.run(runtime.prepare(["one", "one two three"]))
    assert [int(row[0]) for row in counts] == [3, 5]


def test_a_path_or_a_source_is_required(data_settings: Settings) -> None:
    with pytest.raises(ConfigError):
        load_runtime(ModelSpec(name="none", runtime="torch", input="tensor"), "cpu", data_settings)


def test_texts_tokenised_on_arrival_make_the_same_batch_and_the_same_embeddings(
    torch_spec: ModelSpec, data_settings: Settings, sentences: list[str], reference_embeddings: np.ndarray
) -> None:
    runtime = load_runtime(torch_spec, "cpu", data_settings)
    tokenised = runtime.preprocess(sentences)
    whole = runtime.prepare(sentences)
    assert runtime.lengths(tokenised) == whole["attention_mask"].sum(dim=1).tolist()
    prepared = runtime.prepare(tokenised)
    assert all(torch.equal(prepared[k], v) for k, v in whole.items())
    assert np.abs(np.stack(runtime.infer(prepared)) - reference_embeddings).max() < 1e-5
