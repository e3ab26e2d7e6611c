"""What a model folder says about serving it: read from its own files, so the models file need not repeat it.

sentence-transformers folders say how they pool (``1_Pooling/config.json``), whether they normalise (a
``Normalize`` module in ``modules.json``) and how long an input may be; Hugging Face's ``config.json`` names a
classifier's labels (``id2label``), its kind (``problem_type``) and a cross-encoder's activation. Whatever the
models file sets in ``options`` wins. A folder whose sentence-transformers modules batchery would not reproduce
(a ``Dense`` layer, max pooling) is refused here, rather than served with other numbers than its own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchery.errors import ConfigError
from batchery.models.weights import from_folder, weights_dir

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec

DEFAULT_MAX_LENGTH = 512
#: Models whose position ids start after the padding id, so two positions are not available to tokens.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")
#: sentence-transformers module types by the last part of their class name, and what batchery does with them.
SERVED_MODULES = ("Transformer", "Pooling", "Normalize")
POOLING_MODES = {"mean": "mean", "cls": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def resolved(spec: "ModelSpec") -> "ModelSpec":
    """The spec with its folder's serving options under its own; a spec built from no folder as it is."""
    if not from_folder(spec):
        return spec
    found = folder_options(weights_dir(spec), spec.task)
    return dataclasses.replace(spec, options={**found, **spec.options})


def folder_options(folder: Path, task: str) -> dict[str, Any]:
    """``max_length``, and ``pooling`` and ``normalize`` for embeddings, or ``labels`` and ``activation``."""
    config = read_json(folder / "config.json")
    options: dict[str, Any] = {"max_length": max_length(folder, config)}
    if task == "embedding":
        options.update(pooling(folder))
    else:
        options["labels"] = labels(config)
        options["activation"] = activation(config, task)
    return options


def max_length(folder: Path, config: dict[str, Any]) -> int:
    """sentence-transformers' ``max_seq_length``, else the tokenizer's ``model_max_length``, held to the
    positions the model has (a tokenizer may say 10^30 for "no limit")."""
    declared = read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    declared = declared or read_json(folder / "tokenizer_config.json").get("model_max_length") or DEFAULT_MAX_LENGTH
    positions = int(config.get("max_position_embeddings") or DEFAULT_MAX_LENGTH)
    if config.get("model_type") in OFFSET_POSITIONS:
        positions -= 2
    return int(min(float(declared), positions))


def pooling(folder: Path) -> dict[str, Any]:
    """The folder's pooling and normalisation; a plain Hugging Face folder is mean-pooled and not normalised,
    as sentence-transformers itself loads one."""
    modules = read_json(folder / "modules.json", default=[])
    if not modules:
        return {"pooling": "mean", "normalize": False}
    kinds = {str(module.get("type", "")).rsplit(".", 1)[-1]: module for module in modules}
    unserved = sorted(set(kinds) - set(SERVED_MODULES))
    if unserved:
        raise ConfigError(f"{folder}/modules.json: the modules {unserved} are not served by batchery (only {SERVED_MODULES})")
    if "Pooling" not in kinds:
        raise ConfigError(f"{folder}/modules.json has no Pooling module")
    pooling_config = folder / str(kinds["Pooling"].get("path", "")) / "config.json"
    return {"pooling": pooling_mode(pooling_config), "normalize": "Normalize" in kinds}


def pooling_mode(path: Path) -> str:
    """``mean`` or ``cls`` from a Pooling module's config, in the current (``pooling_mode``) or the older
    (``pooling_mode_*_tokens`` flags) form."""
    config = read_json(path)
    mode = config.get("pooling_mode")
    modes = [mode] if isinstance(mode, str) else list(mode or [])
    if mode is None:
        modes = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    found = [POOLING_MODES.get(m) for m in modes]
    if len(found) != 1 or found[0] is None:
        raise ConfigError(f"{path}: pooling {modes} is not served by batchery (only mean or cls pooling)")
    return found[0]


def labels(config: dict[str, Any]) -> list[str]:
    """The classifier's label names in the order of its outputs (``id2label``; ``LABEL_n`` where it has none)."""
    id2label = config.get("id2label") or {}
    count = int(config.get("num_labels") or len(id2label) or 2)
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(max(count, len(id2label)))]


def activation(config: dict[str, Any], task: str) -> str:
    """``softmax``, ``sigmoid`` or ``none``, as transformers' pipelines (classifiers) and sentence-transformers'
    CrossEncoder (cross-encoders) turn logits into scores."""
    count = len(labels(config))
    if task == "cross-encoder":
        named = (config.get("sentence_transformers") or {}).get("activation_fn")
        named = named or config.get("sbert_ce_default_activation_function")
        if not named:
            return "sigmoid" if count == 1 else "none"
        for suffix, kind in (("Sigmoid", "sigmoid"), ("Identity", "none"), ("Softmax", "softmax")):
            if str(named).endswith(suffix):
                return kind
        raise ConfigError(f"cross-encoder activation {named!r} is not served by batchery (Sigmoid, Identity, Softmax)")
    problem = config.get("problem_type")
    if problem == "regression":
        return "none"
    return "sigmoid" if problem == "multi_label_classification" or count == 1 else "softmax"


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content; ``default`` (an empty dict unless given) when there is no such file."""
    if not path.is_file():
        return {} if default is None else default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
