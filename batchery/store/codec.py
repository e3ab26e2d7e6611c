"""How an item's output or error is stored in Redis.

Outputs stay binary until the API edge: a float32 embedding is 1.5 KB as bytes and three times that as
JSON text, and turning it into JSON in the worker would cost the device thread's time for nothing.
The first byte says what follows: ``f`` float32 vector, ``h`` float16 vector, ``j`` JSON, ``e`` error JSON.

A client that asks for :data:`FRAMES` gets the stored values themselves, framed, and no JSON at all: for
each finished item, in index order, its index and the value's length (two little-endian uint32) and then
the value as stored. Writing it costs the API a copy; JSON costs some 25 µs per 384-float vector.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

import numpy as np
import orjson

from batchery.errors import BatcheryError

FRAMES = "application/x-batchery-frames"
FRAME_HEADER = struct.Struct("<II")
_VECTORS = {b"f"[0]: np.float32, b"h"[0]: np.float16}
_TAGS = {np.dtype(np.float32): b"f", np.dtype(np.float16): b"h"}


def encode_output(value: Any) -> bytes:
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype in _TAGS:
        return _TAGS[value.dtype] + value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    return b"j" + dumps(value)


def encode_error(error: BatcheryError) -> bytes:
    return b"e" + orjson.dumps(error.as_dict())


def is_error(raw: bytes) -> bool:
    return raw[:1] == b"e"


def decode(raw: bytes) -> tuple[str, Any]:
    """``("output", value)`` or ``("error", {"code", "message"})``.

    Vectors come back as numpy arrays: :func:`dumps` writes them with float32's shortest decimal form.
    """
    tag = raw[0]
    if tag in _VECTORS:
        return "output", np.frombuffer(raw, dtype=np.dtype(_VECTORS[tag]).newbyteorder("<"), offset=1)
    if raw[:1] == b"e":
        return "error", orjson.loads(raw[1:])
    return "output", orjson.loads(raw[1:])


def result_record(index: int, raw: bytes) -> dict[str, Any]:
    """One entry of a job's results, as the API returns it."""
    kind, value = decode(raw)
    return {"index": index, kind: value}


def result_line(index: int, raw: bytes) -> bytes:
    """One entry of a job's results as a JSON line (NDJSON streams, ``results.jsonl``): ``result_record`` as JSON.

    A JSON output or an error is stored as the very bytes orjson wrote for it, and orjson writes a value it has
    read back the same way, so the line is spliced around them rather than read and written again: for a
    20,000-item job that is most of what streaming its results cost the API. Vectors are written from their
    floats.
    """
    tag = raw[:1]
    if tag == b"j":
        return b'{"index":%d,"output":%b}\n' % (index, raw[1:])
    if tag == b"e":
        return b'{"index":%d,"error":%b}\n' % (index, raw[1:])
    return dumps(result_record(index, raw)) + b"\n"


def dumps(value: Any) -> bytes:
    """JSON bytes for anything :func:`decode` returns (numpy vectors included)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def frame(index: int, raw: bytes) -> bytes:
    """One item of a :data:`FRAMES` body."""
    return FRAME_HEADER.pack(index, len(raw)) + raw


def read_frames(body: bytes) -> Iterator[tuple[int, bytes]]:
    """``(index, stored value)`` for each frame of a whole :data:`FRAMES` body; give each to :func:`decode`."""
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        index, length = FRAME_HEADER.unpack_from(view, offset)
        offset += FRAME_HEADER.size
        if offset + length > len(view):
            raise ValueError(f"frame of item {index} is cut short: {length} bytes announced, {len(view) - offset} left")
        yield index, bytes(view[offset : offset + length])
        offset += length
