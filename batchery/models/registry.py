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

Placement says which devices run a model, and a model can run differently on a GPU than on the CPU::

    [models.minilm]
    devices = ["cuda", "cpu"]   # "cpu", "cuda" (every GPU), "cuda:1" or 1 (one GPU); default: every device
    [models.minilm.on.cuda]     # what changes on a GPU: runtime, path, options and the batching fields
    runtime = "torch"
    options = {fp16 = true}

``enabled = false`` switches a model (a built-in, say) off: it is not served, listed or awaited by /readyz.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from batchery.errors import ConfigError, ModelNotFound
from batchery.models import precision
from batchery.tiers import TIERS

INPUT_KINDS = ("text", "tensor", "json")
QUEUE_PREFIX = "batchery."
DEVICE_KINDS = ("cpu", "cuda")
#: What a ``[models.<name>.on.<kind>]`` table may change; the name, input and version stay one per model.
DEVICE_OVERRIDES = (
    "runtime", "path", "max_batch_size", "max_wait_ms", "max_batch_tokens", "bucket_by_length", "options"
)


#: Options that name a file a runtime reads.
FILE_OPTIONS = ("tokenizer", "weights")


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` for a device string such as ``cpu``, ``cuda`` or ``cuda:1``."""
    return device.partition(":")[0]


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
    #: Other names clients may call it by (``all-MiniLM-L6-v2``, or the name of a hosted model it stands in for).
    aliases: tuple[str, ...] = ()
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    on: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def queues(self) -> tuple[str, ...]:
        """The Celery queues that carry this model's chunks, one per tier, highest tier first."""
        return tuple(self.queue_for(tier) for tier in TIERS)

    def queue_for(self, tier: str) -> str:
        """``batchery.<model>.<tier>``: the tier shows in Flower and ``celery inspect active_queues``."""
        return f"{QUEUE_PREFIX}{self.name}.{tier}"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def synthetic(self) -> bool:
        return self.runtime == "echo"

    @property
    def dimensions(self) -> int | None:
        """The length of its output vectors, for an embedding model that declares it (``options.dimensions``)."""
        value = self.options.get("dimensions")
        return int(value) if value else None

    def placed_on(self, device: str) -> bool:
        """Whether this model runs on ``device`` (``cpu`` or ``cuda:N``, N as nvidia-smi numbers GPUs)."""
        if not self.devices:
            return True
        index = device.partition(":")[2]
        return any(d in (device, device_kind(device)) or (index and d == index) for d in self.devices)

    def on_device(self, device: str) -> "ModelSpec":
        """The spec as it runs on ``device``: its ``on.<kind>`` table applied, options merged."""
        override = self.on.get(device_kind(device))
        if not override:
            return self
        options = {**self.options, **override.get("options", {})}
        return dataclasses.replace(self, **{**override, "options": options})

    def missing_files(self, device: str) -> list[str]:
        """The files this model needs on ``device`` (its ``path``, a tokenizer or weights it names) that do not
        exist here: what would stop it loading, said before anything starts."""
        variant = self.on_device(device)
        named = [("path", variant.path)] + [(f"options.{k}", variant.options.get(k)) for k in FILE_OPTIONS]
        return [
            f"model {self.name!r} on {device_kind(device)}: {field} {value!r} does not exist"
            for field, value in named
            if isinstance(value, str) and value and not Path(value).expanduser().exists()
        ]

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
            "aliases": list(self.aliases),
            "dimensions": self.dimensions,
            "runtimes": {kind: self.on_device(kind).runtime for kind in DEVICE_KINDS},
            "quantize": precision.by_device(self),
            "synthetic": self.synthetic,
            "description": self.description,
            "queues": list(self.queues),
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
        aliases=("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        description="all-MiniLM-L6-v2 sentence embeddings: 384 dims, mean pooling, L2-normalised",
        options={"source": "minilm", "max_length": 256, "pooling": "mean", "normalize": True, "dimensions": 384},
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
        self._aliases: dict[str, str] = {}
        for spec in self._specs.values():
            for alias in spec.aliases:
                if alias in self._specs or alias in self._aliases:
                    raise ConfigError(f"model {spec.name!r}: alias {alias!r} already names a model")
                self._aliases[alias] = spec.name

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def placed_on(self, device: str) -> list[ModelSpec]:
        """The models that run on ``device``, each as it runs there."""
        return [spec.on_device(device) for spec in self if spec.placed_on(device)]

    def by_queue(self, queue: str) -> tuple[ModelSpec, str] | None:
        """The model and tier a queue name carries, or None for a queue that is not one of ours."""
        for spec in self:
            for tier in TIERS:
                if spec.queue_for(tier) == queue:
                    return spec, tier
        return None

    def get(self, ref: str) -> ModelSpec:
        """Look a model up by ``name`` or ``name@version`` (or an alias); ``name@`` names a version too, an empty one."""
        name, at, version = ref.partition("@")
        spec = self._specs.get(name) or self._specs.get(self._aliases.get(name, ""))
        if spec is None:
            raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(sorted(self._specs))}")
        if at and version != spec.version:
            raise ModelNotFound(f"model {name!r} has version {spec.version!r}, not {version!r}")
        return spec


def load_registry(models_file: str = "") -> Registry:
    """The built-ins, overridden and extended by the models file when one is given."""
    specs = dict(BUILTINS)
    if models_file:
        for name, table in _read_models_file(Path(models_file)).items():
            table = dict(table)
            if table.pop("enabled", True) is False:
                specs.pop(name, None)
            else:
                specs[name] = _spec_from_table(name, table, specs.get(name))
    if not specs:
        raise ConfigError(f"models file {models_file}: every model is switched off")
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
        values["devices"] = _devices(name, values["devices"])
    if "on" in values:
        values["on"] = _overrides(name, values["on"])
    if "aliases" in values:
        values["aliases"] = _aliases(name, values["aliases"])
    if base is not None:
        values["options"] = {**base.options, **values.get("options", {})}
        values["on"] = {**base.on, **values.get("on", {})}
        spec = dataclasses.replace(base, **values)
    elif "runtime" not in values:
        raise ConfigError(f"model {name!r}: 'runtime' is required")
    else:
        spec = ModelSpec(name=name, **values)
    _check(spec)
    return spec


def _devices(name: str, devices: Any) -> tuple[str, ...]:
    found = tuple(str(d) for d in devices) if isinstance(devices, list) else None
    if found is None or not all(_is_device(d) for d in found):
        raise ConfigError(f"model {name!r}: devices must be a list of 'cpu', 'cuda', 'cuda:N' or N, not {devices!r}")
    return found


def _aliases(name: str, aliases: Any) -> tuple[str, ...]:
    found = tuple(aliases) if isinstance(aliases, list) else None
    if found is None or not all(isinstance(a, str) and a and "@" not in a for a in found):
        raise ConfigError(f"model {name!r}: aliases must be a list of names without '@', not {aliases!r}")
    return found


def _is_device(device: str) -> bool:
    kind, colon, index = device.partition(":")
    return device.isdigit() or (kind in DEVICE_KINDS and (not colon or (kind == "cuda" and index.isdigit())))


def _overrides(name: str, on: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(on, dict) or not all(isinstance(t, dict) for t in on.values()):
        raise ConfigError(f"model {name!r}: 'on' must hold one table per device kind, e.g. [models.{name}.on.cuda]")
    for kind, table in on.items():
        if kind not in DEVICE_KINDS:
            raise ConfigError(f"model {name!r}: 'on.{kind}': the device kinds are {DEVICE_KINDS}")
        unknown = set(table) - set(DEVICE_OVERRIDES)
        if unknown:
            raise ConfigError(f"model {name!r}: 'on.{kind}' cannot set {sorted(unknown)}; it can set {DEVICE_OVERRIDES}")
    return {kind: dict(table) for kind, table in on.items()}


def _check(spec: ModelSpec) -> None:
    precision.check(spec)
    if spec.input not in INPUT_KINDS:
        raise ConfigError(f"model {spec.name!r}: input must be one of {INPUT_KINDS}, not {spec.input!r}")
    if not spec.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"model name {spec.name!r}: use letters, digits, '-' and '_' only")
    for variant in (spec, *(spec.on_device(kind) for kind in spec.on)):
        if variant.max_batch_size < 1 or variant.max_wait_ms < 0 or variant.max_batch_tokens < 0:
            raise ConfigError(
                f"model {spec.name!r}: max_batch_size must be >= 1, max_wait_ms and max_batch_tokens >= 0"
            )
