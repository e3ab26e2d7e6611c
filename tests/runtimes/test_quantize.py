"""int8 copies: made once per fp32 file and reused, checked against fp32 before they serve, refused when bad."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from batchery.errors import ConfigError
from batchery.models import hf, weights
from batchery.models.registry import ModelSpec
from batchery.runtimes import quantize
from batchery.runtimes.base import load_runtime
from batchery.runtimes.onnx import OnnxRuntime
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
    int8_spec: ModelSpec, fp32_path: Path, data_settings: Settings, tmp_path: Path
) -> None:
    load_runtime(int8_spec, "cpu", data_settings)
    changed = onnx.load(str(fp32_path))
    changed.doc_string = "the same graph, other bytes"
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    load_runtime(dataclasses.replace(int8_spec, path=str(tmp_path / "changed.onnx")), "cpu", data_settings)
    first, second = (quantize.copy_path(data_settings, path) for path in (fp32_path, tmp_path / "changed.onnx"))
    assert first != second and first.is_file() and second.is_file()


def test_int8_minilm_passes_the_reference_check_and_serves_int8_weights_close_to_the_reference(
    int8_spec: ModelSpec,
    fp32_path: Path,
    data_settings: Settings,
    sentences: list[str],
    reference_embeddings: np.ndarray,
) -> None:
    runtime = load_runtime(int8_spec, "cpu", data_settings)
    copy = quantize.copy_path(data_settings, fp32_path)
    agreement = quantize.compare(int8_spec, fp32_path, copy, runtime.encoder)
    assert len(agreement.cosines) == len(quantize.REFERENCE_TEXTS) >= 36
    assert agreement.mean >= quantize.MEAN_COSINE and agreement.min >= quantize.MIN_COSINE
    vectors = np.stack(runtime.run(runtime.prepare(sentences)))
    cosines = (vectors * reference_embeddings).sum(axis=1)
    assert cosines.mean() > 0.99 and cosines.min() > 0.95
    assert np.abs(vectors - reference_embeddings).max() > 1e-3, "fp32 agrees to 1e-4: this must be the int8 copy"
    assert quantize.int8_weights(copy) == 36, "six layers of six MatMuls each"
    assert copy.stat().st_size < 0.7 * fp32_path.stat().st_size


def test_a_copy_that_strays_is_refused_deleted_and_made_afresh_at_the_next_start(
    int8_spec: ModelSpec, fp32_path: Path, tmp_path: Path
) -> None:
    """A copy with one scale per weight tensor (not per channel) is a real, worse quantisation: the check sees it."""
    settings = own_settings(tmp_path)
    planted = quantize.copy_path(settings, fp32_path)
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
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


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
