import pytest

from batchery.errors import ConfigError, ModelNotFound
from batchery.models.registry import load_registry


def test_builtins_are_there_without_a_models_file():
    registry = load_registry()
    assert registry.get("minilm").runtime == "onnx" and registry.get("minilm").max_batch_size == 64
    assert registry.get("echo").synthetic and not registry.get("minilm").synthetic
    assert registry.get("minilm@l6-v2").queues == ("batchery.minilm.interactive", "batchery.minilm.standard", "batchery.minilm.bulk")


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


def test_a_model_has_its_own_chunk_size_or_the_deployments(tmp_path):
    echo = load_registry().get("echo")
    assert (echo.chunk_size, echo.max_batch_size) == (1024, 256), "echo's items cost nothing: big chunks"
    assert load_registry().get("minilm").chunk_size == 0 and load_registry().get("minilm").describe()["chunk_size"] is None
    path = tmp_path / "models.toml"
    path.write_text('[models.minilm]\nchunk_size = 512\n[models.echo]\nchunk_size = 0\n')
    registry = load_registry(str(path))
    assert registry.get("minilm").describe()["chunk_size"] == 512
    assert registry.get("echo").chunk_size == 0, "0: the deployment's BATCHERY_CHUNK_SIZE"


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
        ('[models.x]\nruntime = "onnx"\noptions = {task = "ner"}\n', "task must be one of"),
        ('[models.x]\nruntime = "onnx"\ninput = "pair"\n', "task 'embedding' takes input text, not 'pair'"),
        ('[models.x]\nruntime = "onnx"\ninput = "text"\noptions = {task = "cross-encoder"}\n', "takes input pair"),
        ('[models.x]\nruntime = "onnx"\noptions = {source = "hub"}\n', "source must be one of"),
        ('[models.x]\nruntime = "onnx"\noptions = {source = "hf"}\n', "needs path = the model's folder"),
        ('[models.x]\nruntime = "echo"\nchunk_size = -1\n', "chunk_size must be a whole number from 1 to 10000"),
        ('[models.x]\nruntime = "echo"\nchunk_size = 10001\n', "chunk_size must be"),
        ('[models.x]\nruntime = "echo"\nchunk_size = 2.5\n', "chunk_size must be"),
        ('[models.x]\nruntime = "echo"\nchunk_size = true\n', "chunk_size must be"),
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
    with pytest.raises(ModelNotFound, match="version"):
        registry.get("minilm@")


PLACED = """
[models.minilm]
devices = ["cuda", "cpu"]
[models.minilm.on.cuda]
runtime = "torch"
max_batch_size = 256
options = {fp16 = true}

[models.echo]
enabled = false

[models.scorer]
runtime = "onnx"
input = "tensor"
path = "/m/scorer.onnx"
devices = ["cuda:1", 0]

[models.echo-cpu]
runtime = "echo"
input = "json"
devices = ["cpu"]
"""


@pytest.fixture
def placed(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(PLACED)
    return load_registry(str(path))


def test_models_are_placed_on_the_devices_the_file_names(placed):
    assert [s.name for s in placed.placed_on("cpu")] == ["minilm", "echo-cpu"]
    assert [s.name for s in placed.placed_on("cuda:0")] == ["minilm", "scorer"]
    assert [s.name for s in placed.placed_on("cuda:1")] == ["minilm", "scorer"]
    assert [s.name for s in placed.placed_on("cuda:2")] == ["minilm"]


def test_a_device_kind_table_changes_how_a_model_runs_there_only(placed):
    on_gpu = placed.get("minilm").on_device("cuda:0")
    assert (on_gpu.runtime, on_gpu.max_batch_size, on_gpu.options["fp16"]) == ("torch", 256, True)
    assert on_gpu.options["pooling"] == "mean", "options merge with the model's own"
    on_cpu = placed.get("minilm").on_device("cpu")
    assert (on_cpu.runtime, on_cpu.max_batch_size, "fp16" in on_cpu.options) == ("onnx", 64, False)
    assert placed.get("minilm").describe()["runtimes"] == {"cpu": "onnx", "cuda": "torch"}


def test_enabled_false_switches_a_model_off(placed):
    assert "echo" not in placed.names()
    with pytest.raises(ModelNotFound):
        placed.get("echo")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[models.x]\nruntime = "echo"\ndevices = ["tpu"]\n', "devices must be"),
        ('[models.x]\nruntime = "echo"\ndevices = "cuda"\n', "devices must be"),
        ('[models.x]\nruntime = "echo"\n[models.x.on.tpu]\nruntime = "onnx"\n', "device kinds"),
        ('[models.x]\nruntime = "echo"\n[models.x.on.cuda]\ninput = "text"\n', "cannot set"),
        ('[models.x]\nruntime = "echo"\n[models.x.on.cuda]\nmax_batch_size = 0\n', "max_batch_size"),
        ('[models.minilm]\nenabled = false\n[models.echo]\nenabled = false\n', "every model is switched off"),
    ],
)
def test_bad_placement_is_a_config_error(tmp_path, text, fragment):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_registry(str(path))


def test_a_cross_encoder_takes_pairs_unless_told_otherwise(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[models.rerank]\nruntime = "onnx"\npath = "/m"\noptions = {source = "hf", task = "cross-encoder"}\n')
    spec = load_registry(str(path)).get("rerank")
    assert (spec.input, spec.task, spec.describe()["task"]) == ("pair", "cross-encoder", "cross-encoder")
    assert load_registry().get("minilm").task == "embedding" and load_registry().get("echo").describe()["task"] is None
