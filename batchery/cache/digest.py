"""What makes two items the same work: the model, its version and the input, canonicalised."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from batchery.models.precision import cache_ref
from batchery.models.registry import ModelSpec


def cache_key(spec: ModelSpec, value: Any) -> str:
    """``<model>@<version>[+int8]:<digest>``: a new model version never meets its predecessor's outputs, nor an
    int8 model its fp32 outputs.

    The input is serialised with sorted keys, so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` are one item.
    """
    return keyed(cache_ref(spec), value)


def keyed(ref: str, value: Any) -> str:
    """The key of ``value`` under a model's :func:`cache_ref`, worked out once for a page of items."""
    canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return f"{ref}:{hashlib.blake2b(canonical, digest_size=16).hexdigest()}"
