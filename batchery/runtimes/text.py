"""Host-side input handling that every runtime shares: tokenising and pooling text, stacking tensors.

Pooling lives here, in numpy, so that the ONNX and the PyTorch runtimes turn a model's hidden states into
embeddings the same way, and a model's numbers do not depend on which runtime serves it.
"""

from __future__ import annotations

import array
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
    """One text, tokenised and truncated but not padded: what a text runtime keeps per item until its batch forms.

    The ids are int64 ``array.array``s: made from the tokenizer's lists in one C loop, compact while the item
    waits, and joined as raw bytes when the batch is padded. Two ``np.array`` calls per text cost twice as
    long, on threads that hold the GIL (``benchmarks.host`` measures it).
    """

    ids: array.array
    type_ids: array.array

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

    def __init__(self, tokenizer_path: str | Path, max_length: int | None = None, pairs: bool = False) -> None:
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
        #: Whether items are pairs of texts (a cross-encoder's query and passage) rather than texts.
        self.pairs = pairs
        self.takes = is_pair if pairs else _is_text

    def tokenize(self, texts: Sequence[Any]) -> list[Any]:
        """One :class:`Tokens` per string (or pair of strings, for a pair model, truncated longest first as
        transformers does); anything else is left as it is, for :meth:`pad` to reject by index."""
        takes = self.takes
        given = [tuple(text) if self.pairs else text for text in texts if takes(text)]
        encodings = iter(self.tokenizer.encode_batch_fast(given))
        return [_tokens(next(encodings)) if takes(text) else text for text in texts]

    def pad(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``token_type_ids`` as int64 arrays of shape (batch, longest).

        Takes texts (pairs of texts, for a pair model) or :class:`Tokens`; texts are tokenised first.
        """
        for index, item in enumerate(items):
            if not isinstance(item, Tokens) and not self.takes(item):
                wanted = "a pair of strings" if self.pairs else "a string"
                raise InvalidInput(f"input {index}: expected {wanted}, got {type(item).__name__}")
        tokens = list(items)
        texts = [index for index, item in enumerate(items) if not isinstance(item, Tokens)]
        for index, tokenized in zip(texts, self.tokenize([items[i] for i in texts])):
            tokens[index] = tokenized
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        mask = np.arange(int(lengths.max(initial=0))) < lengths[:, None]
        return {
            "input_ids": _padded(mask, [t.ids for t in tokens], self.pad_id),
            "attention_mask": mask.astype(np.int64),
            "token_type_ids": _padded(mask, [t.type_ids for t in tokens], self.pad_type_id),
        }

    def encode(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        """A batch of texts tokenised and padded in one go."""
        return self.pad(texts)


def is_pair(item: Any) -> bool:
    """Whether ``item`` is two texts, as a cross-encoder takes them: ``[query, passage]``."""
    return isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(text, str) for text in item)


def _is_text(item: Any) -> bool:
    return isinstance(item, str)


def token_lengths(items: Sequence[Any]) -> list[int]:
    """Each item's token count; an input that did not tokenise counts as 1, and fails when its batch is padded."""
    return [len(item) if isinstance(item, Tokens) else 1 for item in items]


def _padded(mask: np.ndarray, rows: list[array.array], pad: int) -> np.ndarray:
    """``rows`` laid out left-aligned where ``mask`` is True, ``pad`` elsewhere: one copy in numpy, where a
    slice assignment per row would cost the thread that forms batches a few microseconds per item."""
    out = np.full(mask.shape, pad, dtype=np.int64)
    out[mask] = np.frombuffer(b"".join(rows), dtype=np.int64)
    return out


def _tokens(encoding: Any) -> Tokens:
    return Tokens(array.array("q", encoding.ids), array.array("q", encoding.type_ids))


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
