"""Host-side input handling that every runtime shares: tokenising and pooling text, stacking tensors.

Pooling lives here, in numpy, so that the ONNX and the PyTorch runtimes turn a model's hidden states into
embeddings the same way, and a model's numbers do not depend on which runtime serves it.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from tokenizers import Tokenizer

from batchery.errors import ConfigError, InvalidInput

POOLINGS = ("mean", "cls", "none")
#: The names BERT-style graphs give their inputs; a runtime feeds only those its model declares.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 512


class TextEncoder:
    """Tokenises a batch, padded to its own longest item rather than to a fixed length.

    Tokenizer files often ship with fixed padding (all-MiniLM-L6-v2's pads every text to 128 tokens);
    padding per batch instead keeps a batch of short sentences short, which is most of the speed of a
    small encoder. ``encode_batch`` runs in the tokenizer's own thread pool, so a batch is tokenised in
    parallel without Python threads. The padding itself is done here, in numpy: each encoding's ids and
    type ids are read once, unpadded, and the attention mask follows from the lengths, which halves the
    Python time a batch holds the GIL for (``benchmarks.host`` measures it).
    """

    def __init__(self, tokenizer_path: str | Path, max_length: int | None = None) -> None:
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise ConfigError(f"cannot load tokenizer {tokenizer_path}: {exc}") from exc
        configured = self.tokenizer.truncation or {}
        self.max_length = int(max_length or configured.get("max_length") or DEFAULT_MAX_LENGTH)
        if self.max_length < 2:
            raise ConfigError(f"tokenizer {tokenizer_path}: max_length must be at least 2, not {self.max_length}")
        padding = self.tokenizer.padding or {}
        pad_token = padding.get("pad_token") or "[PAD]"
        pad_id = padding.get("pad_id")
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id(pad_token) or 0
        self.pad_id = int(pad_id)
        self.pad_type_id = int(padding.get("pad_type_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` as int64 arrays of shape (batch, longest),
        padded on the right."""
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"input {index}: expected a string, got {type(text).__name__}")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        mask = np.arange(int(lengths.max(initial=0))) < lengths[:, None]
        total = int(lengths.sum())
        return {
            "input_ids": _padded(mask, chain.from_iterable(ids), total, self.pad_id),
            "attention_mask": mask.astype(np.int64),
            "token_type_ids": _padded(mask, chain.from_iterable(e.type_ids for e in encodings), total, self.pad_type_id),
        }


def _padded(mask: np.ndarray, values: Iterable[int], count: int, pad: int) -> np.ndarray:
    """Rows of ``values`` laid out where ``mask`` is True, in reading order, and ``pad`` everywhere else."""
    out = np.full(mask.shape, pad, dtype=np.int64)
    out[mask] = np.fromiter(values, dtype=np.int64, count=count)
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The average of each row's real tokens: (batch, tokens, dims) -> (batch, dims); padding counts for nothing."""
    weights = mask.astype(hidden.dtype)[..., None]
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return (hidden * weights).sum(axis=1) / counts


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit length along the last axis, as ``torch.nn.functional.normalize`` does (a zero vector stays zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def check_text_options(options: Mapping[str, Any]) -> tuple[str, bool]:
    """The ``pooling`` and ``normalize`` options, checked once at load time rather than per batch."""
    pooling = str(options.get("pooling", "mean"))
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    return pooling, bool(options.get("normalize", False))


def embeddings(output: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> list[np.ndarray]:
    """One float32 array per input from a text model's first output.

    A 3-D output holds per-token states and is pooled; a 2-D one is already one vector per input. With
    ``pooling = "none"`` a 3-D output gives each input its real tokens' vectors, padding cut off.
    """
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 2:
        rows = l2_normalize(output) if normalize else output
        return list(rows)
    if output.ndim != 3:
        raise ConfigError(f"a text model must output (batch, dims) or (batch, tokens, dims), not {output.shape}")
    if pooling == "none":
        if normalize:
            output = l2_normalize(output)
        return [row[: int(length)] for row, length in zip(output, mask.sum(axis=1))]
    pooled = mean_pool(output, mask) if pooling == "mean" else output[:, 0]
    if normalize:
        pooled = l2_normalize(pooled)
    return list(np.ascontiguousarray(pooled, dtype=np.float32))


def stack_tensors(inputs: Sequence[Any]) -> np.ndarray:
    """One float32 array from a batch of same-shaped arrays or nested lists; a ragged batch is the client's error."""
    try:
        return np.stack([np.asarray(item, dtype=np.float32) for item in inputs])
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"tensor inputs must be numbers of one shape: {exc}") from exc
