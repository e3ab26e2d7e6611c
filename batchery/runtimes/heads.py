"""What a text model's output becomes for a client, by its task: one vector per text, label scores, or a score.

Every text runtime ends a batch here, so that a model's answers do not depend on which runtime served it:

- ``embedding``: the last hidden state pooled (``pooling``: mean or cls) and, with ``normalize``, L2-normalised;
  an output that is already one vector per input is only normalised.
- ``classification``: logits to scores (``activation``: softmax, sigmoid or none), each named by ``labels``:
  ``{"label": <the best>, "scores": {<label>: <score>, ...}}``.
- ``cross-encoder``: one score per pair (the sigmoid of a single logit, by default), or a list of them for a
  model with several outputs, as sentence-transformers' ``CrossEncoder.predict`` gives them.

The options come from the models file, over what the model's folder says (:mod:`batchery.models.folder`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from batchery.errors import ConfigError, ModelError
from batchery.runtimes.text import check_text_options, embeddings

ACTIVATIONS = ("softmax", "sigmoid", "none")


class Head:
    """A task's output step, its options checked once at load time rather than per batch."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.task = str(options.get("task") or "embedding")
        self.pooling, self.normalize = check_text_options(options)
        self.labels = [str(label) for label in options.get("labels") or ()]
        default = "softmax" if self.task == "classification" else "sigmoid"
        self.activation = str(options.get("activation") or default)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")

    @property
    def pools(self) -> bool:
        """Whether per-token states are pooled to one vector per input (what a device may do in place)."""
        return self.task == "embedding" and self.pooling != "none"

    def __call__(self, output: np.ndarray, mask: np.ndarray) -> list[Any]:
        """One client output per input from the model's first output and the batch's attention mask."""
        if self.task == "embedding":
            return embeddings(output, mask, self.pooling, self.normalize)
        logits = np.asarray(output, dtype=np.float32)
        if logits.ndim == 1:
            logits = logits[:, None]
        if logits.ndim != 2:
            raise ModelError(f"a {self.task} model must output (batch, labels) logits, not {logits.shape}")
        scores = activate(logits, self.activation)
        if self.task == "cross-encoder":
            return [_number(row[0]) if row.size == 1 else [_number(x) for x in row] for row in scores]
        return [self._labelled(row) for row in scores]

    def _labelled(self, row: np.ndarray) -> dict[str, Any]:
        names = self.labels or [f"LABEL_{i}" for i in range(row.size)]
        if len(names) != row.size:
            raise ModelError(f"the model gives {row.size} scores for {len(names)} labels {names}")
        return {"label": names[int(row.argmax())], "scores": {name: _number(x) for name, x in zip(names, row)}}


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Softmax over each row, a sigmoid of each logit, or the logits as they are; in float64, then float32."""
    values = logits.astype(np.float64)
    if activation == "softmax":
        values = np.exp(values - values.max(axis=-1, keepdims=True))
        values /= values.sum(axis=-1, keepdims=True)
    elif activation == "sigmoid":
        values = 1.0 / (1.0 + np.exp(-values))
    return values.astype(np.float32)


def _number(value: np.float32) -> float:
    """A float32 as the shortest decimal that reads back as it, so JSON says 0.25, not 0.25000000372529."""
    return float(str(value))
