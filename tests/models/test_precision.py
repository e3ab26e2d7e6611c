"""The quantize option as the registry reads it: checked, listed per device kind, part of the cache identity."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchery.cache import cache_key
from batchery.errors import ConfigError
from batchery.models.precision import cache_ref
from batchery.models.registry import load_registry


def registry_of(tmp_path: Path, toml: str):
    path = tmp_path / "models.toml"
    path.write_text(textwrap.dedent(toml))
    return load_registry(str(path))


def test_int8_minilm_keeps_its_name_and_version_but_not_its_cache_keys(tmp_path: Path) -> None:
    fp32 = load_registry().get("minilm")
    int8 = registry_of(tmp_path, '[models.minilm.options]\nquantize = "int8"\n').get("minilm@l6-v2")
    assert int8.ref == fp32.ref == "minilm@l6-v2"
    assert int8.describe()["quantize"] == {"cpu": "int8", "cuda": "int8"}
    assert fp32.describe()["quantize"] == {"cpu": None, "cuda": None}
    assert cache_key(fp32, "a text").startswith("minilm@l6-v2:"), "fp32 keys are as they were: the cache stays valid"
    assert cache_key(int8, "a text").startswith("minilm@l6-v2+int8:")
    assert cache_key(int8, "a text").split(":")[1] == cache_key(fp32, "a text").split(":")[1]


def test_int8_on_the_cpu_and_pytorch_on_gpus_is_said_per_device(tmp_path: Path) -> None:
    spec = registry_of(
        tmp_path,
        """
        [models.minilm.options]
        quantize = "int8"
        [models.minilm.on.cuda]
        runtime = "torch"
        options = {fp16 = true}
        """,
    ).get("minilm")
    assert spec.describe()["quantize"] == {"cpu": "int8", "cuda": None}
    assert spec.describe()["runtimes"] == {"cpu": "onnx", "cuda": "torch"}
    assert cache_ref(spec) == "minilm@l6-v2+int8"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[models.minilm.options]\nquantize = "int4"\n', "quantize must be one of"),
        ('[models.minilm.on.cpu]\noptions = {quantize = "fp8"}\n', "quantize must be one of"),
        ('[models.minilm]\nruntime = "torch"\n[models.minilm.options]\nquantize = "int8"\n', "onnx runtime"),
        (
            '[models.rerank]\nruntime = "onnx"\npath = "/nowhere"\n'
            '[models.rerank.options]\nsource = "hf"\ntask = "cross-encoder"\nquantize = "int8"\n',
            "only an embedding model gives",
        ),
    ],
)
def test_a_quantize_option_nothing_would_serve_is_a_config_error(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry_of(tmp_path, toml)
