"""The model registry: the built-in models plus those a TOML or YAML models file declares.

A models file has one table per model under ``models``; an entry that names a built-in overrides only the
fields it gives (for example ``[models.minilm] runtime = "torch"`` on a GPU box)::

    [models.sentiment]
    version = "2"
    runtime = "onnx"            # onnx | torch | echo
    path = "/models/sentiment.onnx"
    input = "text"              # text | pair | tensor | json
    max_batch_size = 128
    max_wait_ms = 10
    max_batch_tokens = 8192     # padded tokens (items x longest) per batch; 0: no budget
    chunk_size = 512            # items per chunk (one Celery task); 0: BATCHERY_CHUNK_SIZE
    [models.sentiment.options]  # read by the runtime
    tokenizer = "/models/tokenizer.json"
    pooling = "cls"

A model can be a Hugging Face or sentence-transformers folder, exported to ONNX once and checked against PyTorch::

    [models.reranker]
    runtime = "onnx"
    path = "/models/my-reranker"  # the folder
    [models.reranker.options]
    source = "hf"
    task = "cross-encoder"      # embedding (the default) | classification | cross-encoder (input: pairs)

Placement says which devices run a model, and a model can run differently on a GPU than on the CPU::

    [models.minilm]
    devices = ["cuda", "cpu"]   # "cpu", "cuda" (every GPU), "cuda:1" or 1 (one GPU); default: every device
    [models.minilm.on.cuda]     # what changes on a GPU: runtime, path, options and the batching fields
    runtime = "torch"
    options = {fp16 = true}

``enabled = false`` switches a model (a built-in, say) off: it is not served, listed or awaited by /readyz.

Several versions of one model can be served at once, each with its own queues and batchers, for a canary or a
rollout. A ``[models.<name>.versions.<version>]`` table adds a version: the fields it gives override the model's
(its primary version's), and its ``weight`` is its share of the jobs that name the model without a version
(:mod:`batchery.rollouts`)::

    [models.minilm]
    version = "v1"              # the primary: weight 1 - the others' unless it says its own
    [models.minilm.versions.v2]
    weight = 0.2
    path = "/models/minilm-v2.onnx"
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from batchery.errors import ConfigError, ModelNotFound
from batchery.models import precision
from batchery.models.weights import SOURCES
from batchery.tiers import TIERS

INPUT_KINDS = ("text", "pair", "tensor", "json")
#: What a text model's output is: a vector per text, label scores per text (or pair), or a score per pair.
TASKS = ("embedding", "classification", "cross-encoder")
#: The input kinds each task takes; a cross-encoder's model file may leave ``input`` out.
TASK_INPUTS = {"embedding": ("text",), "classification": ("text", "pair"), "cross-encoder": ("pair",)}
QUEUE_PREFIX = "batchery."
DEVICE_KINDS = ("cpu", "cuda")
#: What a ``[models.<name>.on.<kind>]`` table may change; the name, input and version stay one per model.
DEVICE_OVERRIDES = (
    "runtime", "path", "max_batch_size", "max_wait_ms", "max_batch_tokens", "bucket_by_length", "options"
)


#: What a version table may not change: a version is the same model to its clients.
VERSION_FIXED = ("version", "input", "aliases", "primary")
#: Version names go into queue names and Redis keys.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: The most items one chunk may hold: its record (inputs and indices) is one Redis value, read whole by a worker.
MAX_CHUNK_SIZE = 10_000

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
    #: Items per chunk, the unit of one Celery task; 0: the deployment's ``BATCHERY_CHUNK_SIZE``. A chunk costs
    #: a few milliseconds of CPU whatever its size (its message, record, take and finish, in the worker, the API
    #: and Redis), so a model whose items take microseconds wants chunks of many of them; one whose items take
    #: milliseconds, small chunks that let other jobs' chunks in sooner. The API cuts a job into chunks before
    #: any device is chosen, so the size is one per model, not per device.
    chunk_size: int = 0
    devices: tuple[str, ...] = ()
    #: Other names clients may call it by (``all-MiniLM-L6-v2``, or the name of a hosted model it stands in for).
    aliases: tuple[str, ...] = ()
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    on: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: False for a version a ``versions`` table adds beside the model's own: see :attr:`key`.
    primary: bool = True

    @property
    def key(self) -> str:
        """What names this version's queues, batchers, backlog and counters: the model's name for its primary
        version (so a model with one version is named as it always was), ``name@version`` for any other."""
        return self.name if self.primary else self.ref

    @property
    def queues(self) -> tuple[str, ...]:
        """The Celery queues that carry this model's chunks, one per tier, highest tier first."""
        return tuple(self.queue_for(tier) for tier in TIERS)

    def queue_for(self, tier: str) -> str:
        """``batchery.<key>.<tier>``: the tier shows in Flower and ``celery inspect active_queues``."""
        return f"{QUEUE_PREFIX}{self.key}.{tier}"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def synthetic(self) -> bool:
        return self.runtime == "echo"

    @property
    def task(self) -> str:
        """``options.task``: ``embedding`` (the default), ``classification`` or ``cross-encoder``."""
        return str(self.options.get("task") or "embedding")

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
            "chunk_size": self.chunk_size or None,
            "devices": list(self.devices) or ["all"],
            "aliases": list(self.aliases),
            "dimensions": self.dimensions,
            "task": self.task if self.input in ("text", "pair") else None,
            "runtimes": {kind: self.on_device(kind).runtime for kind in DEVICE_KINDS},
            "quantize": precision.by_device(self),
            "synthetic": self.synthetic,
            "description": self.description,
            "queues": list(self.queues),
            "primary": self.primary,
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
        # Its items cost nothing, so a chunk's Celery and store work is all there is: a chunk four times
        # the deployment default and batches of 256 (what a hand-written Celery echo of 256-item tasks
        # hands its function at once) keep that overhead per item small.
        max_batch_size=256,
        max_wait_ms=2.0,
        chunk_size=1024,
        description="synthetic: returns its inputs, with optional batch_latency_ms and item_latency_ms",
    ),
}


class Registry:
    """The models this deployment serves, by name, each with its versions and their file weights."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        versions: Mapping[str, Sequence[ModelSpec]] | None = None,
        weights: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self._specs = dict(specs)
        self._versions = {
            name: {v.version: v for v in (spec, *(versions or {}).get(name, ()))} for name, spec in self._specs.items()
        }
        self._weights = {name: dict(w) for name, w in (weights or {}).items()}
        self._aliases: dict[str, str] = {}
        for spec in self._specs.values():
            for alias in spec.aliases:
                if alias in self._specs or alias in self._aliases:
                    raise ConfigError(f"model {spec.name!r}: alias {alias!r} already names a model")
                self._aliases[alias] = spec.name

    def __iter__(self) -> Iterator[ModelSpec]:
        """Every version of every model: each has queues to consume and a batcher to run."""
        return iter([spec for versions in self._versions.values() for spec in versions.values()])

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._versions.values())

    def names(self) -> list[str]:
        return list(self._specs)

    def versions(self, name: str) -> list[ModelSpec]:
        """The model's versions, its primary first (``name`` may be an alias)."""
        return list(self._versions[self.get(name).name].values())

    def weights(self, name: str) -> dict[str, float]:
        """The share of a model's unpinned jobs each version gets, as the models file says: version -> weight."""
        primary = self.get(name)
        return dict(self._weights.get(primary.name) or {primary.version: 1.0})

    def select(self, refs: Sequence[str]) -> list[ModelSpec]:
        """The versions ``refs`` name: every version of a bare name, the one of ``name@version``."""
        chosen = [spec for ref in refs for spec in ([self.get(ref)] if "@" in ref else self.versions(ref))]
        return list({spec.key: spec for spec in chosen}.values())

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
        """Look a model up by ``name`` or ``name@version`` (or an alias); a bare name is its primary version.

        ``name@`` names a version too, an empty one. Routing a bare name across versions by weight is
        :class:`batchery.rollouts.Router`'s.
        """
        name, at, version = ref.partition("@")
        spec = self._specs.get(name) or self._specs.get(self._aliases.get(name, ""))
        if spec is None:
            raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(sorted(self._specs))}")
        if not at:
            return spec
        found = self._versions[spec.name].get(version)
        if found is None:
            known = ", ".join(repr(v) for v in self._versions[spec.name])
            raise ModelNotFound(f"model {name!r} has no version {version!r}; its versions: {known}")
        return found


def load_registry(models_file: str = "") -> Registry:
    """The built-ins, overridden and extended by the models file when one is given."""
    specs = dict(BUILTINS)
    versions: dict[str, list[ModelSpec]] = {}
    weights: dict[str, dict[str, float]] = {}
    if models_file:
        for name, table in _read_models_file(Path(models_file)).items():
            table = dict(table)
            if table.pop("enabled", True) is False:
                specs.pop(name, None)
                continue
            version_tables = table.pop("versions", {})
            weight = table.pop("weight", None)
            specs[name] = _spec_from_table(name, table, specs.get(name))
            versions[name] = _versions(specs[name], version_tables)
            if versions[name] or weight is not None:
                weights[name] = _weights(specs[name], versions[name], weight, version_tables)
    if not specs:
        raise ConfigError(f"models file {models_file}: every model is switched off")
    return Registry(specs, versions, weights)


def read_weights(models_file: str) -> dict[str, dict[str, float]]:
    """Only the weights of a models file's versions, read again when it changes (:mod:`batchery.rollouts`)."""
    registry = load_registry(models_file)
    return {name: registry.weights(name) for name in registry.names() if len(registry.versions(name)) > 1}


def _versions(primary: ModelSpec, tables: Any) -> list[ModelSpec]:
    """The versions a ``versions`` table adds beside ``primary``: each overrides the primary's fields."""
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        example = f"[models.{primary.name}.versions.v2]"
        raise ConfigError(f"model {primary.name!r}: 'versions' must hold one table per version, e.g. {example}")
    found = []
    for version, table in tables.items():
        version = str(version)
        if VERSION_NAME.fullmatch(version) is None or version == primary.version:
            raise ConfigError(
                f"model {primary.name!r}: version {version!r} must be letters, digits, '.', '-' and '_', "
                f"other than the primary's {primary.version!r}"
            )
        fixed = set(table) & set(VERSION_FIXED)
        if fixed:
            raise ConfigError(f"model {primary.name!r}: version {version!r} cannot set {sorted(fixed)}")
        values = {k: v for k, v in table.items() if k != "weight"}
        spec = _spec_from_table(primary.name, {**values, "version": version}, primary)
        found.append(dataclasses.replace(spec, primary=False))
    return found


def _weights(
    primary: ModelSpec, versions: Sequence[ModelSpec], weight: Any, tables: Mapping[str, Any]
) -> dict[str, float]:
    """Each version's weight: a version without one gets none (it is reached only by ``name@version``), and the
    primary without one gets what the others leave of 1."""
    given = {v.version: check_weight(primary.name, v.version, tables[v.version].get("weight", 0)) for v in versions}
    if weight is None:
        weight = max(0.0, 1.0 - sum(given.values()))
    found = {primary.version: check_weight(primary.name, primary.version, weight), **given}
    if not any(found.values()):
        raise ConfigError(f"model {primary.name!r}: the weights of its versions are all 0")
    return found


def check_weight(name: str, version: str, weight: Any) -> float:
    """A weight is a finite number >= 0; weights are shares, so only their ratios count."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"model {name!r}: the weight of version {version!r} must be a number >= 0, not {weight!r}")
    return float(weight)


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
    known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name", "primary"}
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
        if "input" not in values and values.get("options", {}).get("task") == "cross-encoder":
            values["input"] = "pair"
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
    if spec.input in ("text", "pair") and spec.runtime != "echo":
        _check_task(spec)
    if not spec.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"model name {spec.name!r}: use letters, digits, '-' and '_' only")
    for variant in (spec, *(spec.on_device(kind) for kind in spec.on)):
        if variant.max_batch_size < 1 or variant.max_wait_ms < 0 or variant.max_batch_tokens < 0:
            raise ConfigError(
                f"model {spec.name!r}: max_batch_size must be >= 1, max_wait_ms and max_batch_tokens >= 0"
            )
    if isinstance(spec.chunk_size, bool) or not isinstance(spec.chunk_size, int) or not 0 <= spec.chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(
            f"model {spec.name!r}: chunk_size must be a whole number from 1 to {MAX_CHUNK_SIZE}, "
            f"or 0 for BATCHERY_CHUNK_SIZE, not {spec.chunk_size!r}"
        )


def _check_task(spec: ModelSpec) -> None:
    """A text model's task, its input kind and its source agree: said when the file is read, not at first use."""
    source = spec.options.get("source")
    if source is not None and source not in SOURCES:
        raise ConfigError(f"model {spec.name!r}: source must be one of {SOURCES}, not {source!r}")
    if spec.task not in TASKS:
        raise ConfigError(f"model {spec.name!r}: task must be one of {TASKS}, not {spec.task!r}")
    if spec.input not in TASK_INPUTS[spec.task]:
        raise ConfigError(
            f"model {spec.name!r}: task {spec.task!r} takes input {' or '.join(TASK_INPUTS[spec.task])}, not {spec.input!r}"
        )
    if source == "hf" and not (spec.path or spec.options.get("weights")):
        raise ConfigError(f"model {spec.name!r}: source 'hf' needs path = the model's folder")
