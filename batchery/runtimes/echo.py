"""The synthetic ``echo`` model: returns its inputs after a configurable delay.

It emulates a device's cost curve (a fixed cost per batch plus a cost per item) so that the pipeline,
the batcher and the benchmarks can be measured without a real model in the way.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from batchery.runtimes.base import Runtime, register_runtime


@register_runtime("echo")
class EchoRuntime(Runtime):
    """Options: ``batch_latency_ms`` (per batch) and ``item_latency_ms`` (per item)."""

    synthetic = True

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        options = self.spec.options
        delay_ms = float(options.get("batch_latency_ms", 0)) + float(options.get("item_latency_ms", 0)) * len(prepared)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        return list(prepared)
