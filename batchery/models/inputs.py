"""Checking inputs against a model at the door, before anything is queued.

Each input kind says what one item must look like; the first bad item is named by its index, so a client
with a million-line file learns which line to fix. Whatever the kind, an item must be JSON that batchery can
store and hash as it was sent (:func:`json_problem`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from batchery.errors import InvalidInput, PayloadTooLarge
from batchery.models.registry import ModelSpec


#: The integers orjson holds exactly (and so the store, the cache key and the results): it reads a wider one as a
#: float, so that echo would not echo it and distinct values would share a cache entry.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: orjson reads 1,024 levels of lists and objects but writes 254 at most: a deeper value would fail its cache
#: key and its store write after its job is recorded. No setting lifts the depth limit past this.
WRITABLE_DEPTH = 254


def check_inputs(spec: ModelSpec, inputs: Sequence[Any], max_chars: int, max_depth: int) -> None:
    check = _CHECKS[spec.input]
    for index, value in enumerate(inputs):
        if isinstance(value, (list, dict, int)) and (problem := json_problem(value, max_depth)):
            raise InvalidInput(f"inputs[{index}]: {problem}")
        check(spec, index, value, max_chars)


def json_problem(value: Any, max_depth: int) -> str | None:
    """Why a JSON value cannot be stored and hashed as it was sent, or None: checked before anything is queued.

    Lists and objects nested deeper than ``max_depth`` (at most :data:`WRITABLE_DEPTH`), or an integer beyond
    64 bits (one only arrives whole when the body was read exactly; see ``batchery.app.requests``).
    """
    limit = min(max_depth, WRITABLE_DEPTH)
    problem = _problem(value, limit)
    if problem == "deep":
        return f"nested deeper than the limit of {limit} levels of lists and objects"
    if problem == "wide":
        return "an integer beyond 64 bits, which cannot be kept exactly; send it as a string"
    return None


def _problem(value: Any, room: int) -> str | None:
    """``deep``, ``wide`` or None. Recursive, which is twice as fast as a stack of its own here, and safe:
    it goes no deeper than the depth limit, far under Python's recursion limit."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    elif type(value) is int:
        return None if INT_MIN <= value <= INT_MAX else "wide"
    else:
        return None
    if room == 0:
        return "deep"
    for child in children:
        if isinstance(child, (list, dict, int)) and (problem := _problem(child, room - 1)):
            return problem
    return None


def _check_text(spec: ModelSpec, index: int, value: Any, max_chars: int) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"inputs[{index}]: model {spec.name!r} takes text, got {_kind(value)}")
    if len(value) > max_chars:
        raise PayloadTooLarge(f"inputs[{index}]: {len(value)} characters, over the limit of {max_chars}")


def _check_pair(spec: ModelSpec, index: int, value: Any, max_chars: int) -> None:
    """Two texts, ``[query, passage]``, each held to the text limit: what a cross-encoder scores."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(text, str) for text in value)):
        got = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
        raise InvalidInput(f"inputs[{index}]: model {spec.name!r} takes a pair of texts [query, passage], got {got}")
    for side, text in enumerate(value):
        if len(text) > max_chars:
            raise PayloadTooLarge(f"inputs[{index}][{side}]: {len(text)} characters, over the limit of {max_chars}")


def _check_tensor(spec: ModelSpec, index: int, value: Any, max_chars: int) -> None:
    shape = list(spec.options.get("shape", []))
    found = _shape(value)
    if found is None:
        raise InvalidInput(f"inputs[{index}]: model {spec.name!r} takes a nested list of numbers, got {_kind(value)}")
    if shape and found != shape:
        raise InvalidInput(f"inputs[{index}]: shape {found} does not match the model's input shape {shape}")


def _check_json(spec: ModelSpec, index: int, value: Any, max_chars: int) -> None:
    if isinstance(value, str) and len(value) > max_chars:
        raise PayloadTooLarge(f"inputs[{index}]: {len(value)} characters, over the limit of {max_chars}")


def _shape(value: Any) -> list[int] | None:
    """The shape of a rectangular nested list of finite numbers, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else None
    if not isinstance(value, list) or not value:
        return None
    inner = [_shape(v) for v in value]
    if inner[0] is None or any(s != inner[0] for s in inner):
        return None
    return [len(value), *inner[0]]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_CHECKS = {"text": _check_text, "pair": _check_pair, "tensor": _check_tensor, "json": _check_json}
