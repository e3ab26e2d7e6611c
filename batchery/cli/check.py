"""`batchery models check`: load every model of a models file and run one batch through it, before deploying.

What would otherwise be found in a worker's log after the stack started (a wrong path, a folder without a
tokenizer, an export that does not reproduce PyTorch, a graph that does not take text) is said here, one line
per model, each in the words of the error a worker would log. Nothing is started and no Redis is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from batchery.cli.console import one_line
from batchery.errors import ModelError
from batchery.models.registry import ModelSpec, Registry
from batchery.runtimes import load_runtime
from batchery.settings import Settings

#: Items in the one batch a check runs: more than one, so that padding and batching are part of it.
CHECK_BATCH = 2


@dataclass(frozen=True)
class Verdict:
    """How one model fared: ``problem`` is None when it loaded and answered."""

    spec: ModelSpec
    device: str
    problem: str | None
    detail: str = ""
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        where = f"{self.spec.ref} on {self.device}"
        if self.skipped:
            return f"SKIP  {where}: {self.detail}"
        return f"OK    {where}: {self.detail}" if self.ok else f"FAIL  {where}: {self.problem}"


def check_models(registry: Registry, settings: Settings, device: str, names: Sequence[str] = ()) -> list[Verdict]:
    """One verdict per model (of ``names`` when given), each as it runs on ``device``; a model placed
    elsewhere is skipped, and said to be."""
    specs = [registry.get(name) for name in names] if names else list(registry)
    return [
        check_model(spec.on_device(device), settings, device) if spec.placed_on(device)
        else Verdict(spec, device, None, f"placed on {list(spec.devices)} only: pass --device to check it there", True)
        for spec in specs
    ]


def check_model(spec: ModelSpec, settings: Settings, device: str) -> Verdict:
    """Load the model as a worker does, run one batch of its warm-up input, and look at what came back."""
    missing = spec.missing_files(device)
    if missing:
        return Verdict(spec, device, "; ".join(missing))
    started = time.perf_counter()
    try:
        runtime = load_runtime(spec, device, settings)
    except Exception as exc:
        return Verdict(spec, device, f"cannot load: {one_line(exc)}")
    try:
        loaded = time.perf_counter() - started
        size = min(CHECK_BATCH, spec.max_batch_size)
        outputs = list(runtime.infer(runtime.prepare(runtime.preprocess([runtime.example_input()] * size))))
        if len(outputs) != size:
            raise ModelError(f"the model returned {len(outputs)} outputs for {size} inputs")
        return Verdict(spec, runtime.device, None, f"{runtime.name}, loaded in {loaded:.1f}s; answers {describe(outputs[0], spec)}")
    except Exception as exc:
        return Verdict(spec, runtime.device, f"a batch of {size}: {one_line(exc)}")
    finally:
        runtime.close()


def describe(output: Any, spec: ModelSpec) -> str:
    """What one output is, in a few words; an embedding of other dimensions than the model declares is wrong."""
    if isinstance(output, np.ndarray):
        if not np.isfinite(output).all():
            raise ModelError(f"the model's output holds NaN or infinity: {output!r}"[:300])
        if spec.dimensions and output.shape != (spec.dimensions,):
            raise ModelError(f"outputs have shape {list(output.shape)}, not the {spec.dimensions} dimensions declared")
        if output.ndim == 1:
            return f"{output.shape[0]}-dimensional {output.dtype} vectors"
        return f"{output.dtype} arrays of shape {list(output.shape)}"
    if isinstance(output, dict) and "scores" in output:
        return f"label scores over {list(output['scores'])}"
    if isinstance(output, float):
        return "a score per pair"
    return f"{type(output).__name__} values"
