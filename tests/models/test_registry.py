import pytest

from batchery.errors import ConfigError, ModelNotFound
from batchery.models.registry import load_registry


def test_builtins_are_there_without_a_models_file():
    registry = load_registry()
    assert registry.get("minilm").runtime == "onnx" and registry.get("minilm").max_batch_size == 64
    assert registry.get("echo").synthetic and not registry.get("minilm").synthetic
    assert registry.get("minilm@l6-v2").queue == "batchery.minilm"


def test_toml_adds_models_and_overrides_builtin_fields(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.minilm]\nruntime = "torch"\nmax_batch_size = 512\n[models.minilm.options]\nfp16 = true\n'
        '[models.scorer]\nruntime = "onnx"\npath = "/m/scorer.onnx"\ninput = "tensor"\nversion = "3"\ndevices = [0, 1]\n'
        '[models.scorer.options]\nshape = [4]\n'
    )
    registry = load_registry(str(path))
    minilm = registry.get("minilm")
    assert (minilm.runtime, minilm.max_batch_size, minilm.max_wait_ms) == ("torch", 512, 5.0)
    assert minilm.options["fp16"] is True and minilm.options["pooling"] == "mean", "options merge with the built-in's"
    scorer = registry.get("scorer@3")
    assert (scorer.input, scorer.devices, scorer.path) == ("tensor", ("0", "1"), "/m/scorer.onnx")


def test_yaml_works_too(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  slow:\n    runtime: echo\n    input: json\n    options: {batch_latency_ms: 5}\n")
    assert load_registry(str(path)).get("slow").options == {"batch_latency_ms": 5}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[models.x]\ninput = "text"\n', "'runtime' is required"),
        ('[models.x]\nruntime = "onnx"\nbatch = 3\n', "unknown fields"),
        ('[models.x]\nruntime = "onnx"\ninput = "audio"\n', "input must be one of"),
        ('[models.x]\nruntime = "onnx"\nmax_batch_size = 0\n', "max_batch_size"),
        ("[models.x\n", "not valid"),
    ],
)
def test_bad_models_files_are_config_errors(tmp_path, text, fragment):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_registry(str(path))


def test_unknown_model_and_version():
    registry = load_registry()
    with pytest.raises(ModelNotFound, match="known models"):
        registry.get("nope")
    with pytest.raises(ModelNotFound, match="version"):
        registry.get("echo@2")
