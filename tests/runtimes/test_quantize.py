"""int8 copies: made once per fp32 file and reused, checked against fp32 before they serve, refused when bad."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from batchery.errors import ConfigError
from batchery.models import hf, weights
from batchery.models.registry import ModelSpec
from batchery.runtimes import outliers, quantize
from batchery.runtimes.base import load_runtime
from batchery.runtimes.onnx import OnnxRuntime
from batchery.runtimes.text import TextEncoder
from batchery.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp32_path(minilm_spec: ModelSpec, data_settings: Settings) -> Path:
    return hf.artifacts(minilm_spec, data_settings)[0]


@pytest.fixture
def int8_spec(minilm_spec: ModelSpec, fp32_path: Path) -> ModelSpec:
    """MiniLM in int8, reading the session's fp32 export, so that a test's own data dir holds only int8 copies."""
    tokenizer = weights.weights_dir(minilm_spec) / "tokenizer.json"
    options = {**minilm_spec.options, "quantize": "int8", "tokenizer": str(tokenizer)}
    return dataclasses.replace(minilm_spec, path=str(fp32_path), options=options)


@pytest.fixture
def encoder(int8_spec: ModelSpec) -> TextEncoder:
    """The tokenizer as the runtime makes it: the calibration inputs, and so the copy's path, depend on it."""
    return TextEncoder(int8_spec.options["tokenizer"], int8_spec.options["max_length"])


def own_settings(folder: Path) -> Settings:
    return Settings(data_dir=str(folder))


def copies(settings: Settings) -> list[Path]:
    return sorted((settings.data_path / "models" / "int8").glob("*/model.onnx"))


def made(caplog: pytest.LogCaptureFixture) -> int:
    return sum(record.getMessage().startswith("quantising ") for record in caplog.records)


def test_workers_starting_together_make_one_copy_and_later_ones_reuse_it(
    int8_spec: ModelSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = own_settings(tmp_path)
    caplog.set_level(logging.INFO, logger="batchery.runtimes.quantize")
    loaded: list[OnnxRuntime] = []
    starts = [
        threading.Thread(target=lambda: loaded.append(load_runtime(int8_spec, "cpu", settings))) for _ in range(2)
    ]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert len(loaded) == 2 and made(caplog) == 1
    [copy] = copies(settings)
    assert sorted(p.name for p in copy.parent.iterdir()) == [".lock", "model.onnx"], "no temporary file is left"
    before = copy.stat()
    load_runtime(int8_spec, "cpu", settings)
    after = copy.stat()
    assert made(caplog) == 1 and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert caplog.text.count("serving the int8 copy") == 3, "every load checks the copy, a reused one too"


def test_a_changed_fp32_file_gets_a_copy_of_its_own(
    int8_spec: ModelSpec, fp32_path: Path, data_settings: Settings, encoder: TextEncoder, tmp_path: Path
) -> None:
    load_runtime(int8_spec, "cpu", data_settings)
    changed = onnx.load(str(fp32_path))
    changed.doc_string = "the same graph, other bytes"
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    load_runtime(dataclasses.replace(int8_spec, path=str(tmp_path / "changed.onnx")), "cpu", data_settings)
    first, second = (
        quantize.copy_path(data_settings, path, encoder=encoder) for path in (fp32_path, tmp_path / "changed.onnx")
    )
    assert first != second and first.is_file() and second.is_file()


def test_a_text_models_copy_is_keyed_by_its_calibration_inputs_too(
    fp32_path: Path, data_settings: Settings, encoder: TextEncoder, int8_spec: ModelSpec
) -> None:
    """Another tokenizer or max_length tokenises the calibration texts otherwise, and so makes another copy."""
    shorter = TextEncoder(int8_spec.options["tokenizer"], 16)
    paths = {quantize.copy_path(data_settings, fp32_path, encoder=e) for e in (encoder, shorter, None)}
    assert len(paths) == 3


def test_int8_minilm_passes_the_reference_check_and_serves_int8_weights_close_to_the_reference(
    int8_spec: ModelSpec,
    fp32_path: Path,
    data_settings: Settings,
    sentences: list[str],
    reference_embeddings: np.ndarray,
) -> None:
    runtime = load_runtime(int8_spec, "cpu", data_settings)
    copy = quantize.copy_path(data_settings, fp32_path, encoder=runtime.encoder)
    agreement = quantize.compare(int8_spec, fp32_path, copy, runtime.encoder)
    assert len(agreement.cosines) == len(quantize.REFERENCE_TEXTS) >= 36
    assert agreement.mean >= quantize.MEAN_COSINE and agreement.min >= quantize.MIN_COSINE >= 0.99
    vectors = np.stack(runtime.run(runtime.prepare(sentences)))
    cosines = (vectors * reference_embeddings).sum(axis=1)
    assert cosines.mean() > 0.995 and cosines.min() > 0.99
    assert np.abs(vectors - reference_embeddings).max() > 1e-3, "fp32 agrees to 1e-4: this must be the int8 copy"
    assert quantize.int8_weights(copy) == 36, "six layers of six MatMuls each"
    assert copy.stat().st_size < 0.7 * fp32_path.stat().st_size


def test_a_copy_that_strays_is_refused_deleted_and_made_afresh_at_the_next_start(
    int8_spec: ModelSpec, fp32_path: Path, encoder: TextEncoder, tmp_path: Path
) -> None:
    """A copy with one scale per weight tensor (not per channel) is a real, worse quantisation: the check sees it."""
    settings = own_settings(tmp_path)
    planted = quantize.copy_path(settings, fp32_path, encoder=encoder)
    planted.parent.mkdir(parents=True)
    quantize_dynamic(
        fp32_path, planted, weight_type=QuantType.QInt8, per_channel=False, op_types_to_quantize=["MatMul"]
    )
    with pytest.raises(
        ConfigError, match=r"strays from fp32: mean cosine 0\.9[0-8]\d+, min 0\.\d+ .*\(required: mean >= 0\.99"
    ):
        load_runtime(int8_spec, "cpu", settings)
    assert not planted.exists()
    load_runtime(int8_spec, "cpu", settings)
    assert planted.exists()


def test_taming_the_outliers_is_what_brings_every_reference_text_within_the_bound(
    int8_spec: ModelSpec, fp32_path: Path, encoder: TextEncoder, tmp_path: Path
) -> None:
    """The copy quantised as it was made before (per channel, untamed) leaves the worst reference text far below
    0.99; the tamed copy, with its outlier channels' MatMuls still fp32 beside 36 int8 ones, reaches it."""
    plain = tmp_path / "plain.onnx"
    quantize_dynamic(fp32_path, plain, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    tamed = tmp_path / "tamed" / "model.onnx"
    tamed.parent.mkdir()
    quantize.make_copy(fp32_path, tamed, encoder=encoder)
    before, after = (quantize.compare(int8_spec, fp32_path, copy, encoder) for copy in (plain, tamed))
    assert before.min < 0.97 and after.min >= 0.99 and after.mean > before.mean
    graph = onnx.load(str(tamed)).graph
    kept = [node for node in graph.node if node.op_type == "MatMul" and node.name.endswith("/outliers")]
    assert kept and quantize.int8_weights(tamed) == quantize.int8_weights(plain) == 36
    floats = {init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    assert all(node.input[1] in floats for node in kept)


def test_taming_changes_minilms_graph_but_not_what_it_computes_in_fp32(fp32_path: Path, encoder: TextEncoder) -> None:
    original = onnx.load(str(fp32_path))
    tamed = outliers.tame(original, quantize.calibration_feeds(encoder))
    assert tamed.smoothed == 12, "the inputs of Q/K/V and of the feed-forward layer, which come from LayerNorms"
    assert 1 <= tamed.split_channels <= 6 * outliers.MAX_OUTLIERS
    matmuls = {node.name for node in tamed.model.graph.node if node.op_type == "MatMul"}
    assert set(tamed.fp32_matmuls) <= matmuls and len(matmuls) == 48 + len(tamed.fp32_matmuls)
    weights = {init.name: numpy_helper.to_array(init) for init in original.graph.initializer if len(init.dims) == 2}
    changed = [
        init.name
        for init in tamed.model.graph.initializer
        if init.name in weights and not np.array_equal(numpy_helper.to_array(init), weights[init.name])
    ]
    smoothed, split = 3 * 6 + 6, len(tamed.fp32_matmuls)
    assert len(changed) == smoothed + split, "Q, K, V and feed-forward weights scaled; split ones lose their rows"
    sessions = [
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for model in (original, tamed.model)
    ]
    for feed in quantize.text_batches(quantize.REFERENCE_TEXTS, encoder):
        expected, got = (session.run(None, feed)[0] for session in sessions)
        assert np.abs(got - expected).max() < 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_calibration_texts_are_not_the_texts_the_copy_is_checked_on() -> None:
    assert len(quantize.CALIBRATION_TEXTS) >= 32
    assert not set(quantize.CALIBRATION_TEXTS) & set(quantize.REFERENCE_TEXTS)
    assert quantize.calibration_feeds(None) == []


def test_bounds_can_be_tightened_past_what_int8_reaches(int8_spec: ModelSpec, data_settings: Settings) -> None:
    strict = dataclasses.replace(int8_spec, options={**int8_spec.options, "quantize_mean_cosine": 0.9999})
    with pytest.raises(ConfigError, match="required: mean >= 0.9999"):
        load_runtime(strict, "cpu", data_settings)


def test_int8_on_a_gpu_is_a_config_error(int8_spec: ModelSpec, data_settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"CPU only.*on\.cpu"):
        load_runtime(int8_spec, "cuda:0", data_settings)


def mlp(path: Path, hidden: int = 64) -> Path:
    """Two MatMuls with a ReLU between: the shape of layers that int8 serves, built without an exporter."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.standard_normal((16, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 8)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    return save_graph(path, "mlp", nodes, [w1, w2], outputs=8)


def outlier_graph(path: Path) -> Path:
    """``x`` read by two MatMuls that share one weight (the first with a bias), their sum normalised, and the
    norm's output read by a MatMul and by a residual Add: both kinds of activation, and a shared weight."""
    rng = np.random.default_rng(7)
    arrays = {
        "w": rng.standard_normal((16, 16)),
        "bias": rng.standard_normal(16),
        "gamma": np.where(np.arange(16) == 5, 20.0, rng.uniform(0.5, 2.0, 16)),
        "beta": rng.standard_normal(16),
        "u": rng.standard_normal((16, 16)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="first"),
        helper.make_node("Add", ["a", "bias"], ["biased"]),
        helper.make_node("MatMul", ["x", "w"], ["b"], name="second"),
        helper.make_node("Add", ["biased", "b"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "u"], ["m"], name="after_norm"),
        helper.make_node("Add", ["n", "m"], ["y"]),
    ]
    weights = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in arrays.items()]
    return save_graph(path, "outliers", nodes, weights, outputs=16)


def save_graph(path: Path, name: str, nodes: list, initializers: list, outputs: int) -> Path:
    """A graph from ``x`` (16 floats an item) to ``y`` (``outputs`` floats), saved at opset 17."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def outlier_inputs(seed: int) -> np.ndarray:
    """Channel 3 fifty times the others, as a BERT hidden state's few outlier channels are."""
    values = np.random.default_rng(seed).standard_normal((64, 16))
    values[:, 3] *= 50
    return values.astype(np.float32)


def test_an_outlier_channel_is_split_out_to_fp32_and_a_norms_output_smoothed(tmp_path: Path) -> None:
    path = outlier_graph(tmp_path / "outliers.onnx")
    tamed = outliers.tame(onnx.load(str(path)), [{"x": outlier_inputs(1)}])
    assert (tamed.smoothed, tamed.split_channels) == (1, 1)
    assert sorted(tamed.fp32_matmuls) == ["first/outliers", "second/outliers"]
    onnx.save(tamed.model, str(tmp_path / "tamed.onnx"))
    plain, split = tmp_path / "plain.int8.onnx", tmp_path / "tamed.int8.onnx"
    quantize_dynamic(path, plain, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    quantize_dynamic(
        tmp_path / "tamed.onnx",
        split,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=list(tamed.fp32_matmuls),
    )
    x = {"x": outlier_inputs(2)}
    fp32, fp32_tamed, int8, int8_tamed = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, x)[0]
        for p in (path, tmp_path / "tamed.onnx", plain, split)
    )
    assert np.abs(fp32_tamed - fp32).max() < 1e-4 * np.abs(fp32).max(), "the same function in fp32"
    error, error_tamed = (float(np.abs(out - fp32).mean()) for out in (int8, int8_tamed))
    assert error_tamed < error / 3, (error_tamed, error)


def test_any_onnx_tensor_model_can_run_int8(tmp_path: Path) -> None:
    settings = own_settings(tmp_path / "data")
    path = mlp(tmp_path / "mlp.onnx")
    fp32 = load_runtime(ModelSpec(name="mlp", runtime="onnx", path=str(path), input="tensor"), "cpu", settings)
    spec = ModelSpec(name="mlp", runtime="onnx", path=str(path), input="tensor", options={"quantize": "int8"})
    int8 = load_runtime(spec, "cpu", settings)
    inputs = [list(row) for row in np.random.default_rng(5).standard_normal((4, 16))]
    expected, got = (np.stack(r.run(r.prepare(inputs))) for r in (fp32, int8))
    assert min(quantize.cosines(expected, got)) > 0.99 and not np.allclose(expected, got, atol=1e-4)
    assert quantize.int8_weights(copies(settings)[0]) == 2
    graph = onnx.load(str(copies(settings)[0])).graph
    assert not [node for node in graph.node if node.op_type == "Gather"], "no calibration inputs: nothing tamed"


def test_a_graph_without_the_ops_to_quantise_is_refused(tmp_path: Path) -> None:
    path = mlp(tmp_path / "mlp.onnx")
    spec = ModelSpec(
        name="mlp",
        runtime="onnx",
        path=str(path),
        input="tensor",
        options={"quantize": "int8", "quantize_ops": ["Conv"]},
    )
    with pytest.raises(ConfigError, match="no Conv weights to quantise"):
        load_runtime(spec, "cpu", own_settings(tmp_path / "data"))
    assert copies(own_settings(tmp_path / "data")) == []
