"""``python -m benchmarks.interference``: how much a little competing CPU load costs ONNX Runtime.

Why the minilm pipeline can lose to raw ORT on a small machine: with ``intra_op_num_threads`` equal to the
core count, every operator is split across all cores and waits for its slowest part, so a process that
takes a core for a few milliseconds (the API answering a poll, Redis, the client) stalls the whole model,
not just its share. This runs raw minilm under a synthetic load (a process busy ``duty`` of each 20 ms)
with the intra-op threads at the core count and at one less, and with ORT's spin-waiting on and off.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import onnxruntime

from batchery.models.registry import BUILTINS
from batchery.runtimes.onnx import OnnxRuntime, providers, resolve_files, session_options
from batchery.runtimes.text import TextEncoder
from batchery.settings import Settings
from benchmarks import corpus
from benchmarks.pipeline import DEFAULT_DATA_DIR

PERIOD_S = 0.020
_LOAD = "import time\nwhile True:\n t = time.perf_counter()\n while time.perf_counter() - t < {busy}: pass\n time.sleep({idle})\n"


def load(threads: int, spinning: bool, settings: Settings) -> OnnxRuntime:
    """minilm as the worker loads it, with ``threads`` intra-op threads and spin-waiting on or off."""
    spec = BUILTINS["minilm"]
    spec = dataclasses.replace(spec, options={**spec.options, "threads": threads})
    model_path, tokenizer_path = resolve_files(spec, settings)
    options = session_options(spec)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers("cpu"))
    runtime = OnnxRuntime(spec, "cpu", session, TextEncoder(tokenizer_path, spec.options.get("max_length")))
    runtime.warm_up()
    return runtime


def items_per_s(runtime: OnnxRuntime, texts: Sequence[str]) -> float:
    size = runtime.spec.max_batch_size
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        runtime.run(runtime.prepare(texts[start : start + size]))
    return len(texts) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interference", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell, alternated; the median is printed")
    parser.add_argument("--duties", default="0,0.1,0.5", help="competing load, as a share of one core")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where the minilm ONNX export is cached")
    args = parser.parse_args(argv)
    settings = Settings(data_dir=args.data_dir)
    texts = corpus.texts(args.texts)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    variants = {f"threads={cores} spin": (cores, True), f"threads={cores} no spin": (cores, False)}
    if cores > 1:
        variants[f"threads={cores - 1} spin"] = (cores - 1, True)
    runtimes = {name: load(threads, spin, settings) for name, (threads, spin) in variants.items()}
    print(f"{'load (share of a core)':>24}  " + "  ".join(f"{name:>18}" for name in runtimes))
    for duty in (float(d) for d in args.duties.split(",")):
        noise = None
        if duty > 0:
            code = _LOAD.format(busy=duty * PERIOD_S, idle=(1 - duty) * PERIOD_S)
            noise = subprocess.Popen([sys.executable, "-c", code])
        try:
            rates: dict[str, list[float]] = {name: [] for name in runtimes}
            for _ in range(args.repeat):
                for name, runtime in runtimes.items():
                    rates[name].append(items_per_s(runtime, texts))
        finally:
            if noise is not None:
                noise.kill()
                noise.wait()
        cells = "  ".join(f"{statistics.median(r):>14.0f} /s " for r in rates.values())
        print(f"{duty:>24.0%}  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
