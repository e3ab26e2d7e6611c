"""Checking inputs against a model at the door, before anything is queued.

Each input kind says what one item must look like; the first bad item is named by its index, so a client
with a million-line file learns which line to fix.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from batchery.errors import InvalidInput, PayloadTooLarge
from batchery.models.registry import ModelSpec


def check_inputs(spec: ModelSpec, inputs: Sequence[Any], max_chars: int) -> None:
    check = _CHECKS[spec.input]
    for index, value in enumerate(inputs):
        check(spec, index, value, max_chars)


def _check_text(spec: ModelSpec, index: int, value: Any, max_chars: int) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"inputs[{index}]: model {spec.name!r} takes text, got {_kind(value)}")
    if len(value) > max_chars:
        raise PayloadTooLarge(f"inputs[{index}]: {len(value)} characters, over the limit of {max_chars}")


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


_CHECKS = {"text": _check_text, "tensor": _check_tensor, "json": _check_json}
