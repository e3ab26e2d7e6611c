"""The synthetic ``echo`` model: returns its inputs after a configurable delay.

It emulates a device's cost curve (a fixed cost per batch plus a cost per item) so that the pipeline,
the batcher and the benchmarks can be measured without a real model in the way. With ``oom_above`` it also
emulates a device too small for big batches: a batch of more items raises PyTorch's own out-of-memory error,
so the path a real CUDA out-of-memory takes (recognised, split, the batch size lowered) runs on a CPU.
With ``vector_dims`` it stands in for an embedding model: each item's output is a unit float32 vector made from
its input alone (:func:`synthetic_vector`), so a test can tell whose output landed where.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Sequence

import numpy as np
import orjson

from batchery.runtimes.base import Runtime, register_runtime


@register_runtime("echo")
class EchoRuntime(Runtime):
    """Options: ``batch_latency_ms`` (per batch), ``item_latency_ms`` (per item), ``oom_above`` (items) and
    ``vector_dims`` (outputs are vectors of that length instead of the inputs)."""

    synthetic = True

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        options = self.spec.options
        oom_above = options.get("oom_above")
        if oom_above is not None and len(prepared) > int(oom_above):
            raise _out_of_memory(len(prepared), int(oom_above))
        delay_ms = float(options.get("batch_latency_ms", 0)) + float(options.get("item_latency_ms", 0)) * len(prepared)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        dims = int(options.get("vector_dims") or 0)
        if dims:
            return [synthetic_vector(item, dims) for item in prepared]
        return list(prepared)


def synthetic_vector(value: Any, dims: int) -> np.ndarray:
    """A unit float32 vector of ``dims`` that depends on ``value`` alone, the same in every process."""
    seed = int.from_bytes(hashlib.sha256(orjson.dumps(value)).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return vector / np.float32(np.linalg.norm(vector))


def _out_of_memory(size: int, limit: int) -> Exception:
    """torch's own exception class, imported only by a model that asks for it."""
    import torch

    return torch.OutOfMemoryError(f"synthetic: a batch of {size} does not fit; at most {limit} do (oom_above)")
