"""The synthetic ``echo`` model: returns its inputs after a configurable delay.

It emulates a device's cost curve (a fixed cost per batch plus a cost per item) so that the pipeline,
the batcher and the benchmarks can be measured without a real model in the way. With ``oom_above`` it also
emulates a device too small for big batches: a batch of more items raises PyTorch's own out-of-memory error,
so the path a real CUDA out-of-memory takes (recognised, split, the batch size lowered) runs on a CPU.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from batchery.runtimes.base import Runtime, register_runtime


@register_runtime("echo")
class EchoRuntime(Runtime):
    """Options: ``batch_latency_ms`` (per batch), ``item_latency_ms`` (per item) and ``oom_above`` (items)."""

    synthetic = True

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        options = self.spec.options
        oom_above = options.get("oom_above")
        if oom_above is not None and len(prepared) > int(oom_above):
            raise _out_of_memory(len(prepared), int(oom_above))
        delay_ms = float(options.get("batch_latency_ms", 0)) + float(options.get("item_latency_ms", 0)) * len(prepared)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        return list(prepared)


def _out_of_memory(size: int, limit: int) -> Exception:
    """torch's own exception class, imported only by a model that asks for it."""
    import torch

    return torch.OutOfMemoryError(f"synthetic: a batch of {size} does not fit; at most {limit} do (oom_above)")
