"""The ONNX runtime on the exported MiniLM model and on a small graph built here."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from batchery.errors import ConfigError, InvalidInput
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.runtimes.onnx import OnnxRuntime
from batchery.settings import Settings

#: The tests build models with exporters torch calls deprecated; the runtimes under test are not.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.onnx"),
]


@pytest.fixture(scope="module")
def runtime(minilm_spec: ModelSpec, data_settings: Settings) -> OnnxRuntime:
    loaded = load_runtime(minilm_spec, "cpu", data_settings)
    assert isinstance(loaded, OnnxRuntime)
    return loaded


def test_minilm_matches_the_pytorch_reference_on_a_padded_batch(
    runtime: OnnxRuntime, sentences: list[str], reference_embeddings: np.ndarray
) -> None:
    prepared = runtime.prepare(sentences)
    assert prepared["input_ids"].shape[1] > 200, "the batch should hold a long text and pad the short ones"
    outputs = runtime.run(prepared)
    assert len(outputs) == len(sentences)
    assert np.abs(np.stack(outputs) - reference_embeddings).max() < 1e-4


def test_minilm_gives_unit_length_384_dim_embeddings(runtime: OnnxRuntime, sentences: list[str]) -> None:
    outputs = runtime.run(runtime.prepare(sentences))
    for vector in outputs:
        assert vector.shape == (384,) and vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_related_sentences_are_closer_than_unrelated_ones(runtime: OnnxRuntime, sentences: list[str]) -> None:
    guitar, strumming, stocks, cats, kitten = runtime.run(runtime.prepare(sentences[1:6]))
    assert guitar @ strumming > guitar @ stocks + 0.3
    assert cats @ kitten > cats @ stocks + 0.3
    assert kitten @ cats > kitten @ guitar


def test_a_batch_is_padded_to_its_longest_item_not_to_a_fixed_length(runtime: OnnxRuntime) -> None:
    prepared = runtime.prepare(["one", "two words"])
    assert prepared["input_ids"].shape == (2, 4)
    assert prepared["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert all(array.dtype == np.int64 for array in prepared.values())


def test_long_texts_are_truncated_to_max_length(runtime: OnnxRuntime) -> None:
    prepared = runtime.prepare(["word " * 1000])
    assert prepared["input_ids"].shape == (1, 256)
    assert runtime.run(prepared)[0].shape == (384,)


def test_an_item_alone_gets_the_embedding_it_gets_in_a_batch(runtime: OnnxRuntime, sentences: list[str]) -> None:
    batched = runtime.run(runtime.prepare(sentences))
    alone = runtime.run(runtime.prepare(sentences[:1]))[0]
    assert np.abs(alone - batched[0]).max() < 1e-5


def test_cls_pooling_without_normalisation(minilm_spec: ModelSpec, data_settings: Settings) -> None:
    spec = dataclasses.replace(minilm_spec, options={**minilm_spec.options, "pooling": "cls", "normalize": False})
    runtime = load_runtime(spec, "cpu", data_settings)
    (vector,) = runtime.run(runtime.prepare(["a test"]))
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3


def test_minilm_warms_up_at_its_batch_size_and_still_answers_after(runtime: OnnxRuntime) -> None:
    assert runtime.warm_up() == [runtime.spec.max_batch_size] == runtime.warm_up_batch_sizes()
    [vector] = runtime.infer(runtime.prepare(runtime.preprocess(["after the warm-up"])))
    assert vector.shape == (384,) and abs(float((vector**2).sum()) - 1.0) < 1e-5


def test_non_string_text_is_invalid_input(runtime: OnnxRuntime) -> None:
    with pytest.raises(InvalidInput):
        runtime.prepare(["fine", 3])


def test_asking_for_cuda_without_it_falls_back_to_the_cpu_and_says_so(
    minilm_spec: ModelSpec, data_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="batchery.runtimes.onnx"):
        runtime = load_runtime(minilm_spec, "cuda:0", data_settings)
    assert runtime.device == "cpu" and runtime.session.get_providers() == ["CPUExecutionProvider"]
    assert "CPU" in caplog.text


class SmallMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = SmallMLP().eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    torch.onnx.export(
        model, (torch.zeros(2, 8),), str(path), input_names=["features"], output_names=["scores"],
        dynamic_axes={"features": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    return model, path


def test_a_tensor_model_matches_the_module_it_was_exported_from(
    mlp_onnx: tuple[torch.nn.Module, Path], data_settings: Settings
) -> None:
    model, path = mlp_onnx
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(path), input="tensor", options={"threads": 1})
    runtime = load_runtime(spec, "cpu", data_settings)
    inputs = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    outputs = runtime.run(runtime.prepare([list(row) for row in inputs]))
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    assert len(outputs) == 5 and outputs[0].shape == (3,)
    assert np.abs(np.stack(outputs) - expected).max() < 1e-5


def test_a_tensor_model_warms_up_with_the_shape_its_graph_declares(
    mlp_onnx: tuple[torch.nn.Module, Path], data_settings: Settings
) -> None:
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(mlp_onnx[1]), input="tensor")
    runtime = load_runtime(spec, "cpu", data_settings)
    assert runtime.example_input().shape == (8,)
    runtime.warm_up()


def test_ragged_tensors_are_invalid_input(mlp_onnx: tuple[torch.nn.Module, Path], data_settings: Settings) -> None:
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(mlp_onnx[1]), input="tensor")
    with pytest.raises(InvalidInput):
        load_runtime(spec, "cpu", data_settings).prepare([[0.0] * 8, [0.0] * 7])


@pytest.mark.parametrize(
    "fields",
    [
        {"path": "/nonexistent/model.onnx", "input": "tensor"},
        {"path": "", "input": "tensor"},
        {"path": "", "input": "text", "options": {"source": "elsewhere"}},
        {"path": "", "input": "text", "options": {"source": "minilm", "pooling": "max"}},
    ],
)
def test_bad_model_config_is_a_config_error(fields: dict, data_settings: Settings) -> None:
    with pytest.raises(ConfigError):
        load_runtime(ModelSpec(name="bad", runtime="onnx", **fields), "cpu", data_settings)


def test_token_counts_report_real_and_padded_tokens(runtime: OnnxRuntime) -> None:
    prepared = runtime.prepare(["one", "a somewhat longer sentence of several words"])
    tokens, padded = runtime.token_counts(prepared)
    longest = prepared["input_ids"].shape[1]
    assert padded == 2 * longest
    assert longest < tokens < padded


@pytest.mark.parametrize(("option", "process_share", "expected"), [(None, 1, 1), (None, 3, 3), (2, 1, 2)])
def test_intra_op_threads_are_the_process_share_unless_the_model_sets_them(
    mlp_onnx: tuple[torch.nn.Module, Path], data_settings: Settings, option: int | None, process_share: int,
    expected: int,
) -> None:
    options = {} if option is None else {"threads": option}
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(mlp_onnx[1]), input="tensor", options=options)
    runtime = load_runtime(spec, "cpu", dataclasses.replace(data_settings, worker_threads=process_share))
    assert runtime.session.get_session_options().intra_op_num_threads == expected


def test_texts_tokenised_on_arrival_make_the_same_batch_and_the_same_embeddings(
    runtime: OnnxRuntime, sentences: list[str], reference_embeddings: np.ndarray
) -> None:
    tokenised = runtime.preprocess(sentences)
    assert runtime.lengths(tokenised) == runtime.prepare(sentences)["attention_mask"].sum(axis=1).tolist()
    prepared = runtime.prepare(tokenised)
    assert all(np.array_equal(prepared[k], v) for k, v in runtime.prepare(sentences).items())
    assert np.abs(np.stack(runtime.infer(prepared)) - reference_embeddings).max() < 1e-4


def test_a_bad_input_survives_arrival_and_fails_when_its_batch_is_made(runtime: OnnxRuntime) -> None:
    tokenised = runtime.preprocess(["fine", 3])
    assert runtime.lengths(tokenised) == [3, 1]
    with pytest.raises(InvalidInput, match="input 1"):
        runtime.prepare(tokenised)


def test_a_tensor_model_has_no_lengths(mlp_onnx: tuple[torch.nn.Module, Path], data_settings: Settings) -> None:
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(mlp_onnx[1]), input="tensor")
    runtime = load_runtime(spec, "cpu", data_settings)
    assert runtime.lengths(runtime.preprocess([[0.0] * 8])) is None
