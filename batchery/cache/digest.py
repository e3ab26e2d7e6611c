"""What makes two items the same work: the model, its version and the input, canonicalised."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from batchery.models.registry import ModelSpec


def cache_key(spec: ModelSpec, value: Any) -> str:
    """``<model>@<version>:<digest>``: a new model version never meets its predecessor's outputs.

    The input is serialised with sorted keys, so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` are one item.
    """
    canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return f"{spec.name}@{spec.version}:{hashlib.blake2b(canonical, digest_size=16).hexdigest()}"
