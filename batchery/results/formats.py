"""The formats a job's results are written in, each fed one item at a time in index order.

``jsonl``: ``results.jsonl``, one line per item, ``{"index": i, "output": ...}`` or ``{"index": i, "error":
{"code", "message"}}``, exactly as ``GET /v1/jobs/<id>/results`` shows an item.

``npy``: ``outputs.npy``, a float32 array of shape (items, dimensions), row i the vector of item i, and
``errors.jsonl``, one line as above for every item whose row is zeros: each failed item, and any output that is
not a vector of the model's dimensions. A row is an output exactly when its index is not in ``errors.jsonl``.
The header is written first (the shape is known from the job and its model), then the rows as they come: the
array is never held whole. A float16 output is widened to float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from batchery.store.codec import result_line

FORMATS = ("jsonl", "npy")
FLOAT32 = np.dtype("<f4")
_WIDTH = {b"f"[0]: 4, b"h"[0]: 2}


@dataclass(frozen=True)
class ResultsRequest:
    """What a job asked for: its formats, and the width of its vectors (for ``npy``)."""

    formats: tuple[str, ...]
    dimensions: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"formats": list(self.formats), "dimensions": self.dimensions}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "ResultsRequest":
        return cls(tuple(value["formats"]), value.get("dimensions"))

    def files(self) -> dict[str, str]:
        """Each file the formats make: its kind (``results``, ``outputs``, ``errors``) and file name."""
        found = {}
        if "jsonl" in self.formats:
            found["results"] = "results.jsonl"
        if "npy" in self.formats:
            found.update(outputs="outputs.npy", errors="errors.jsonl")
        return found


class JsonlWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def page(self, start: int, raws: list[bytes]) -> None:
        self.out.write(b"".join(result_line(start + offset, raw) for offset, raw in enumerate(raws)))


class NpyWriter:
    """Rows into ``outputs``, the items without one into ``errors``."""

    def __init__(self, outputs: IO[bytes], errors: IO[bytes], total: int, dimensions: int) -> None:
        self.outputs = outputs
        self.errors = errors
        self.dimensions = dimensions
        self.zeros = bytes(FLOAT32.itemsize * dimensions)
        header = {"descr": FLOAT32.str, "fortran_order": False, "shape": (total, dimensions)}
        npy_format.write_array_header_1_0(outputs, header)

    def row(self, raw: bytes) -> bytes | None:
        """The item's row as little-endian float32 bytes, or None when it is no vector of the right width."""
        width = _WIDTH.get(raw[0]) if raw else None
        if width is None or len(raw) != 1 + width * self.dimensions:
            return None
        if width == 4:
            return raw[1:]
        return np.frombuffer(raw, dtype="<f2", offset=1).astype(FLOAT32).tobytes()

    def page(self, start: int, raws: list[bytes]) -> None:
        rows, rest = [], []
        for offset, raw in enumerate(raws):
            row = self.row(raw)
            if row is None:
                rest.append(result_line(start + offset, raw))
                row = self.zeros
            rows.append(row)
        self.outputs.write(b"".join(rows))
        if rest:
            self.errors.write(b"".join(rest))
