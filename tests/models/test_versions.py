"""Several versions of one model in the models file: each its own queues, the primary named as before."""

import pytest

from batchery.cli.pool import plan_pool
from batchery.errors import ConfigError, ModelNotFound
from batchery.models.registry import load_registry, read_weights

CANARY = """
[models.minilm]
version = "v1"
[models.minilm.versions.v2]
weight = 0.2
max_batch_size = 32
options = {pooling = "cls"}
[models.minilm.versions.v3]
"""


def registry_of(tmp_path, text):
    path = tmp_path / "models.toml"
    path.write_text(text)
    return load_registry(str(path))


def test_a_version_overrides_the_primary_and_has_queues_of_its_own(tmp_path):
    registry = registry_of(tmp_path, CANARY)
    v1, v2 = registry.get("minilm"), registry.get("minilm@v2")
    assert (v1.key, v1.version, v1.primary) == ("minilm", "v1", True), "the primary keeps the model's name"
    assert (v2.key, v2.name, v2.primary, v2.max_batch_size, v2.runtime) == ("minilm@v2", "minilm", False, 32, "onnx")
    assert v2.options["pooling"] == "cls" and v2.options["max_length"] == 256, "options merge with the primary's"
    assert v1.queue_for("standard") == "batchery.minilm.standard"
    assert v2.queue_for("standard") == "batchery.minilm@v2.standard"
    assert [s.key for s in registry if s.name == "minilm"] == ["minilm", "minilm@v2", "minilm@v3"]
    assert registry.get("all-MiniLM-L6-v2@v2") == v2, "an alias names the versions too"
    assert registry.by_queue("batchery.minilm@v2.bulk") == (v2, "bulk")


def test_weights_default_to_what_the_canaries_leave(tmp_path):
    registry = registry_of(tmp_path, CANARY)
    assert registry.weights("minilm") == {"v1": 0.8, "v2": 0.2, "v3": 0.0}
    assert registry.weights("echo") == {"1": 1.0}, "a model of one version takes all its jobs"
    assert read_weights(str(tmp_path / "models.toml")) == {"minilm": {"v1": 0.8, "v2": 0.2, "v3": 0.0}}


def test_a_bare_name_serves_every_version_and_a_pinned_one_its_own(tmp_path):
    registry = registry_of(tmp_path, CANARY)
    assert [s.key for s in registry.select(["minilm"])] == ["minilm", "minilm@v2", "minilm@v3"]
    assert [s.key for s in registry.select(["minilm@v2", "echo"])] == ["minilm@v2", "echo"]
    (slot,) = plan_pool(registry, [("cpu0", "cpu")], ["minilm"])
    assert slot.models == ("minilm", "minilm@v2", "minilm@v3")
    assert "batchery.minilm@v2.interactive" in slot.queues
    with pytest.raises(ModelNotFound, match="no version 'v9'; its versions: 'v1', 'v2', 'v3'"):
        registry.get("minilm@v9")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[models.minilm.versions.l6-v2]\n', "other than the primary's"),
        ('[models.minilm.versions."v 2"]\n', "must be letters, digits"),
        ('[models.minilm.versions.v2]\ninput = "json"\n', "cannot set ['input']"),
        ('[models.minilm.versions.v2]\nweight = -1\n', "must be a number >= 0"),
        ('[models.minilm.versions.v2]\nweight = "x"\n', "must be a number >= 0"),
        ('[models.minilm]\nweight = 0\n[models.minilm.versions.v2]\n', "all 0"),
        ('[models.minilm.versions.v2]\nbatch = 1\n', "unknown fields"),
        ('[models.minilm]\nversions = 3\n', "one table per version"),
    ],
)
def test_bad_versions_are_refused_by_name(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as caught:
        registry_of(tmp_path, text)
    assert fragment in str(caught.value)
