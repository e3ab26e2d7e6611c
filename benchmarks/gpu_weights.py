"""``python -m benchmarks.gpu_weights [OUT_DIR]``: MiniLM in float16, small enough to take to the GPU machine.

The weights package is 83 MB, and the working tree that travels to the GPU machine may hold 64 MiB. In
float16 the weights take about 45 MB, and float16 is what the GPU runs anyway, so nothing is lost there.
The folder is what the ``minilm`` loader reads through ``options.weights``: ``config.json``,
``tokenizer.json`` and ``model.safetensors``. It also holds a test set (``reference.json``) and its embeddings
(``reference.npy``) computed here, on the CPU in float32 from the *original* weights, so that the GPU's outputs can be held to
the true reference on a machine that has only the float16 copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from batchery.models import hf
from batchery.models.weights import weights_file
from batchery.models.registry import BUILTINS, ModelSpec
from batchery.runtimes.text import TextEncoder
from benchmarks import corpus

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "weights" / "minilm-fp16"
REFERENCE_TEXTS = "reference.json"
REFERENCE_VECTORS = "reference.npy"
MANIFEST = "manifest.json"
#: Not the load's corpus seed: the check set must not be a subset of the texts timed.
CHECK_SEED = 7
#: Every this many check texts, one long enough to be truncated at 256 tokens, so the check covers every length.
LONG_EVERY = 8
LONG_SENTENCES = 16
COPIED = ("config.json", "tokenizer.json")


def check_texts(count: int) -> list[str]:
    """Short corpus sentences with a long text (several sentences run together) every eighth place."""
    short = corpus.texts(count, seed=CHECK_SEED)
    return [
        " ".join(corpus.texts(LONG_SENTENCES, seed=CHECK_SEED * 1000 + i)) if i % LONG_EVERY == LONG_EVERY - 1 else text
        for i, text in enumerate(short)
    ]


def write_fp16_weights(source: Path, target: Path) -> None:
    """Every floating tensor as float16; integer buffers (position ids) as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    halved = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(halved, str(target), metadata={"format": "pt", "converted_from": "float32", "torch": torch.__version__})


def reference_embeddings(spec: ModelSpec, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """float32 embeddings of ``texts`` by the PyTorch reference model on the CPU."""
    model = hf.reference_model(spec)
    encoder = TextEncoder(hf.weights_dir(spec) / "tokenizer.json", spec.options["max_length"])
    parts = [
        hf.reference_embeddings(model, encoder.encode(texts[i : i + batch_size]))
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def with_weights(spec: ModelSpec, folder: Path) -> ModelSpec:
    return dataclasses.replace(spec, options={**spec.options, "weights": str(folder)})


def build(out: Path, check_count: int, spec: ModelSpec = BUILTINS["minilm"]) -> dict:
    """Write the folder (replacing one already there) and return its manifest."""
    source = hf.weights_dir(spec)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in COPIED:
        shutil.copyfile(source / name, partial / name)
    write_fp16_weights(weights_file(source), partial / "model.safetensors")
    texts = check_texts(check_count)
    (partial / REFERENCE_TEXTS).write_text(json.dumps(texts, ensure_ascii=False) + "\n")
    np.save(partial / REFERENCE_VECTORS, reference_embeddings(spec, texts))
    manifest = {
        "model": spec.ref,
        "dtype": "float16",
        "source": str(source),
        "source_sha256": _sha256(weights_file(source)),
        "reference": {"texts": len(texts), "computed_with": "float32 on the CPU, original weights"},
        "files": {p.name: p.stat().st_size for p in sorted(partial.iterdir())},
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return manifest


def load_reference(folder: Path) -> tuple[list[str], np.ndarray]:
    """The check texts and their float32 reference embeddings, as :func:`build` wrote them."""
    texts = json.loads((folder / REFERENCE_TEXTS).read_text())
    return texts, np.load(folder / REFERENCE_VECTORS, allow_pickle=False).astype(np.float32)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_weights", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"folder to write (default {DEFAULT_OUT})")
    parser.add_argument("--check-texts", type=int, default=512, help="texts in the reference test set")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    manifest = build(args.out, args.check_texts)
    print(json.dumps(manifest["files"], indent=2))
    print(f"{folder_mb(args.out):.1f} MB in {args.out} ({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
