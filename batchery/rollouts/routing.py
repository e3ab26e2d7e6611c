"""Which version a job runs on: the same key always falls on the same version for the same weights.

The key (a job's id, or a routing key its client gave) is hashed to a point in [0, 1); the versions' weights,
normalised and laid end to end in a fixed order, say which one the point lands in. Every item of a job thus
runs on one version, a retried job with the same routing key lands where it landed before, and moving weight
from one version to another moves only the keys in between.
"""

from __future__ import annotations

import hashlib
from typing import Mapping


def point(key: str) -> float:
    """A point in [0, 1) spread evenly over keys: the first 8 bytes of the key's BLAKE2b digest."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick(weights: Mapping[str, float], key: str) -> str | None:
    """The version ``key`` falls on, in the mapping's order; None when every weight is 0."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return None
    at, edge = point(key) * total, 0.0
    chosen = None
    for version, weight in weights.items():
        if weight <= 0:
            continue
        edge += weight
        chosen = version
        if at < edge:
            break
    return chosen
