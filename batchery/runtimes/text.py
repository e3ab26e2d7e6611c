"""Host-side input handling that every runtime shares: tokenising and pooling text, stacking tensors.

Pooling lives here, in numpy, so that the ONNX and the PyTorch runtimes turn a model's hidden states into
embeddings the same way, and a model's numbers do not depend on which runtime serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tokenizers import Tokenizer

from batchery.errors import ConfigError, InvalidInput

POOLINGS = ("mean", "cls", "none")
#: The names BERT-style graphs give their inputs; a runtime feeds only those its model declares.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Tokens:
    """One text, tokenised and truncated but not padded: what a text runtime keeps per item until its batch forms."""

    ids: np.ndarray
    type_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Tokenises texts one by one as they arrive, and pads each batch to its own longest item.

    Tokenizer files often ship with fixed padding (all-MiniLM-L6-v2's pads every text to 128 tokens);
    padding per batch instead keeps a batch of short sentences short, which is most of the speed of a
    small encoder. Tokenising apart from padding lets the batcher know every item's length before it forms
    a batch, so it can put texts of like length together. ``encode_batch`` runs in the tokenizer's own
    thread pool, so texts are tokenised in parallel without Python threads.
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
        pad_id = padding.get("pad_id")
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id(padding.get("pad_token") or "[PAD]") or 0
        self.pad_id = int(pad_id)
        self.pad_type_id = int(padding.get("pad_type_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def tokenize(self, texts: Sequence[Any]) -> list[Any]:
        """One :class:`Tokens` per string; anything else is left as it is, for :meth:`pad` to reject by index."""
        strings = [text for text in texts if isinstance(text, str)]
        encodings = iter(self.tokenizer.encode_batch_fast(strings))
        return [_tokens(next(encodings)) if isinstance(text, str) else text for text in texts]

    def pad(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` as int64 arrays of shape (batch, longest).

        Takes texts or :class:`Tokens`; texts are tokenised first.
        """
        for index, item in enumerate(items):
            if not isinstance(item, (str, Tokens)):
                raise InvalidInput(f"input {index}: expected a string, got {type(item).__name__}")
        tokens = list(items)
        texts = [index for index, item in enumerate(items) if isinstance(item, str)]
        for index, tokenized in zip(texts, self.tokenize([items[i] for i in texts])):
            tokens[index] = tokenized
        longest = max((len(t) for t in tokens), default=0)
        ids = np.full((len(tokens), longest), self.pad_id, dtype=np.int64)
        type_ids = np.full((len(tokens), longest), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(tokens), longest), dtype=np.int64)
        for row, t in enumerate(tokens):
            ids[row, : len(t)] = t.ids
            type_ids[row, : len(t)] = t.type_ids
            mask[row, : len(t)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}

    def encode(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        """A batch of texts tokenised and padded in one go."""
        return self.pad(texts)


def token_lengths(items: Sequence[Any]) -> list[int]:
    """Each item's token count; an input that did not tokenise counts as 1, and fails when its batch is padded."""
    return [len(item) if isinstance(item, Tokens) else 1 for item in items]


def _tokens(encoding: Any) -> Tokens:
    return Tokens(np.array(encoding.ids, dtype=np.int64), np.array(encoding.type_ids, dtype=np.int64))


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
