"""The model registry: the built-in models plus those a TOML or YAML models file declares.

A models file has one table per model under ``models``; an entry that names a built-in overrides only the
fields it gives (for example ``[models.minilm] runtime = "torch"`` on a GPU box)::

    [models.sentiment]
    version = "2"
    runtime = "onnx"            # onnx | torch | echo
    path = "/models/sentiment.onnx"
    input = "text"              # text | tensor | json
    max_batch_size = 128
    max_wait_ms = 10
    max_batch_tokens = 8192     # padded tokens (items x longest) per batch; 0: no budget
    [models.sentiment.options]  # read by the runtime
    tokenizer = "/models/tokenizer.json"
    pooling = "cls"
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from batchery.errors import ConfigError, ModelNotFound

INPUT_KINDS = ("text", "tensor", "json")
QUEUE_PREFIX = "batchery."


@dataclass(frozen=True)
class ModelSpec:
    """How to load and batch one model; ``options`` belong to its runtime."""

    name: str
    runtime: str
    version: str = "1"
    path: str = ""
    input: str = "text"
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    #: Padded tokens (items x longest) a batch may hold; 0: only ``max_batch_size`` counts.
    max_batch_tokens: int = 0
    #: Group texts of like length into a batch, so that short ones are not padded to a long one.
    bucket_by_length: bool = True
    devices: tuple[str, ...] = ()
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        """The Celery queue that carries this model's chunks."""
        return QUEUE_PREFIX + self.name

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def synthetic(self) -> bool:
        return self.runtime == "echo"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "input": self.input,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_batch_tokens": self.max_batch_tokens,
            "bucket_by_length": self.bucket_by_length,
            "devices": list(self.devices) or ["all"],
            "synthetic": self.synthetic,
            "description": self.description,
            "queue": self.queue,
        }


BUILTINS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        name="minilm",
        runtime="onnx",
        version="l6-v2",
        input="text",
        max_batch_size=64,
        max_wait_ms=5.0,
        max_batch_tokens=4096,
        description="all-MiniLM-L6-v2 sentence embeddings: 384 dims, mean pooling, L2-normalised",
        options={"source": "minilm", "max_length": 256, "pooling": "mean", "normalize": True},
    ),
    "echo": ModelSpec(
        name="echo",
        runtime="echo",
        version="1",
        input="json",
        max_batch_size=64,
        max_wait_ms=2.0,
        description="synthetic: returns its inputs, with optional batch_latency_ms and item_latency_ms",
    ),
}


class Registry:
    """The models this deployment serves, by name."""

    def __init__(self, specs: Mapping[str, ModelSpec]) -> None:
        self._specs = dict(specs)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, ref: str) -> ModelSpec:
        """Look a model up by ``name`` or ``name@version``."""
        name, _, version = ref.partition("@")
        spec = self._specs.get(name)
        if spec is None:
            raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(sorted(self._specs))}")
        if version and version != spec.version:
            raise ModelNotFound(f"model {name!r} has version {spec.version!r}, not {version!r}")
        return spec


def load_registry(models_file: str = "") -> Registry:
    """The built-ins, overridden and extended by the models file when one is given."""
    specs = dict(BUILTINS)
    if models_file:
        for name, table in _read_models_file(Path(models_file)).items():
            specs[name] = _spec_from_table(name, table, specs.get(name))
    return Registry(specs)


def _read_models_file(path: Path) -> dict[str, Mapping[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read models file {path}: {exc}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:
        raise ConfigError(f"models file {path} is not valid: {exc}") from exc
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"models file {path}: 'models' must be a table of model tables")
    return models


def _spec_from_table(name: str, table: Mapping[str, Any], base: ModelSpec | None) -> ModelSpec:
    known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"model {name!r}: unknown fields {sorted(unknown)} (known: {sorted(known)})")
    values = dict(table)
    if "devices" in values:
        values["devices"] = tuple(str(d) for d in values["devices"])
    if base is not None:
        values["options"] = {**base.options, **values.get("options", {})}
        spec = dataclasses.replace(base, **values)
    elif "runtime" not in values:
        raise ConfigError(f"model {name!r}: 'runtime' is required")
    else:
        spec = ModelSpec(name=name, **values)
    _check(spec)
    return spec


def _check(spec: ModelSpec) -> None:
    if spec.input not in INPUT_KINDS:
        raise ConfigError(f"model {spec.name!r}: input must be one of {INPUT_KINDS}, not {spec.input!r}")
    if spec.max_batch_size < 1 or spec.max_wait_ms < 0 or spec.max_batch_tokens < 0:
        raise ConfigError(f"model {spec.name!r}: max_batch_size must be >= 1, max_wait_ms and max_batch_tokens >= 0")
    if not spec.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"model name {spec.name!r}: use letters, digits, '-' and '_' only")
