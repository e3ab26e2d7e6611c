"""``python -m benchmarks.bucketing [--quick] [--out DIR|FILE.json]``: what grouping texts by length buys.

``minilm`` runs through the real batcher (its three threads, the real ONNX Runtime session, outputs written
to a private redis-server) twice over the same mixed-length corpus: once batched as before bucketing
(``bucket_by_length = false``, ``max_batch_tokens = 0``: arrival order, each batch padded to its longest text)
and once as configured (texts of like length together, within ``max_batch_tokens``). Items are fed as a worker
feeds them: chunks of ``chunk_size`` from ``worker_concurrency`` threads, each waiting for its chunk before
taking the next. The two modes alternate run by run, so drift in a shared machine hits both alike; the median
run of each is reported, with the share of padded tokens, the CPU seconds spent (which other programs' load
disturbs less than the wall time), the throughput and their ratios. The outputs of the two must agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from batchery import defaults
from batchery.batching import Batcher, BatchHook, add_hook, remove_hook
from batchery.batching.hooks import BatchShape
from batchery.models.registry import ModelSpec, load_registry
from batchery.runtimes import Runtime, load_runtime
from batchery.store import JobStore
from batchery.store.codec import decode
from benchmarks import corpus, report
from benchmarks.cpu import machine_cpu_s, self_cpu_s
from benchmarks.stack import Stack, run_interruptibly

log = logging.getLogger("benchmarks")
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bucketing.json"
DEFAULT_DATA_DIR = HERE / ".cache"
PADDING_TARGET = 0.5
MODES = ("fifo", "bucketed")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bucketing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report or folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="128 texts, one run of each mode")
    parser.add_argument("--items", type=int, help="texts per run (default 512, --quick 128)")
    parser.add_argument("--repeat", type=int, help="runs of each mode; the median is reported (default 2, --quick 1)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR (ONNX export cache)")
    parser.add_argument("--max-batch-tokens", type=int, help="override minilm's max_batch_tokens (0: no budget)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    args.items = args.items or (128 if args.quick else 512)
    args.repeat = args.repeat or (1 if args.quick else 2)
    return args


class Shapes(BatchHook):
    """Every prepared batch's shape: real and padded tokens, items."""

    def __init__(self) -> None:
        self.shapes: list[BatchShape] = []

    def after_prepare(self, spec: ModelSpec, items: Sequence[Any], shape: BatchShape) -> None:
        self.shapes.append(shape)


def run_once(runtime: Runtime, store: JobStore, texts: Sequence[str]) -> tuple[dict[str, Any], str]:
    """All ``texts`` through a fresh batcher, fed as a worker's chunk tasks feed it; the figures and the job."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": runtime.spec.name, "version": runtime.spec.version, "total": len(texts)})
    chunk = defaults.CHUNK_SIZE
    chunks = [[(i, texts[i]) for i in range(s, min(s + chunk, len(texts)))] for s in range(0, len(texts), chunk)]
    hook = add_hook(Shapes())
    batcher = Batcher(runtime, store).start()
    try:
        started, machine_before, self_before = time.perf_counter(), machine_cpu_s(), self_cpu_s()
        with ThreadPoolExecutor(defaults.WORKER_CONCURRENCY) as pool:
            tickets = list(pool.map(lambda pairs: _submit_and_wait(batcher, job_id, pairs), chunks))
        seconds = time.perf_counter() - started
        others_s = (machine_cpu_s() - machine_before) - (self_cpu_s() - self_before)
    finally:
        batcher.stop()
        remove_hook(hook)
    if sum(t.succeeded for t in tickets) != len(texts):
        raise RuntimeError(f"{sum(t.failed for t in tickets)} of {len(texts)} items failed")
    tokens = sum(s.tokens or 0 for s in hook.shapes)
    padded = sum(s.padded_tokens or 0 for s in hook.shapes)
    figures = {
        "items": len(texts),
        "seconds": round(seconds, 4),
        "items_per_s": round(len(texts) / seconds, 1),
        "batches": len(hook.shapes),
        "mean_batch_items": round(statistics.fmean(s.items for s in hook.shapes), 1),
        "tokens": tokens,
        "padded_tokens": padded,
        "padded_fraction": round(1 - tokens / padded, 4),
        "largest_batch_padded_tokens": max(s.padded_tokens or 0 for s in hook.shapes),
        "cpu_s": round(self_cpu_s() - self_before, 2),
        "others_cores_busy": round(max(others_s, 0.0) / seconds, 2),  # other programs (and Redis) meanwhile
    }
    return figures, job_id


def _submit_and_wait(batcher: Batcher, job_id: str, pairs: list[tuple[int, str]]) -> Any:
    ticket = batcher.submit(job_id, pairs)
    ticket.wait()
    return ticket


def outputs(store: JobStore, job_id: str, count: int) -> np.ndarray:
    return np.stack([decode(raw)[1] for _, raw in store.outputs(job_id, 0, count)])


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [r["seconds"] for r in runs]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    texts = corpus.mixed(args.items)
    with Stack(args.out.parent / "logs", args.data_dir) as stack:
        settings = stack.settings
        spec = load_registry().get("minilm")
        if args.max_batch_tokens is not None:
            spec = dataclasses.replace(spec, max_batch_tokens=args.max_batch_tokens)
        specs = {"fifo": dataclasses.replace(spec, bucket_by_length=False, max_batch_tokens=0), "bucketed": spec}
        runtimes = {mode: load_runtime(specs[mode], "cpu", settings) for mode in MODES}
        store = JobStore.from_url(settings.effective_redis_url, settings.job_ttl_s)
        for mode in MODES:  # warm: the session's first batches of each shape, the tokenizer's thread pool
            run_once(runtimes[mode], store, texts[:128])
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        jobs: dict[str, str] = {}
        for _ in range(args.repeat):
            for mode in MODES:
                figures, jobs[mode] = run_once(runtimes[mode], store, texts)
                runs[mode].append(figures)
                log.info("%s: %s", mode, figures)
        fifo_out, bucketed_out = (outputs(store, jobs[mode], len(texts)) for mode in MODES)
        difference = float(np.abs(fifo_out - bucketed_out).max())
        if difference > 1e-4:
            raise RuntimeError(f"bucketed and arrival-order batches gave embeddings that differ by {difference:.2e}")
    results = {mode: median(runs[mode]) for mode in MODES}  # each repeat ran both modes back to back
    fifo, bucketed = results["fifo"], results["bucketed"]
    ratios = {
        "padded_fraction": round(bucketed["padded_fraction"] / fifo["padded_fraction"], 3),
        "cpu_s": round(bucketed["cpu_s"] / fifo["cpu_s"], 3),
        "items_per_s": round(bucketed["items_per_s"] / fifo["items_per_s"], 3),
        "items_per_s_each_repeat": [
            round(f["seconds"] / b["seconds"], 3) for f, b in zip(runs["fifo"], runs["bucketed"])
        ],
    }
    return {
        "command": " ".join(["python -m benchmarks.bucketing", *sys.argv[1:]]),
        "quick": args.quick,
        "corpus": {"kind": "benchmarks.corpus.mixed", "mix": corpus.MIX, "texts": len(texts)},
        "model": spec.describe(),
        "feeding": {"chunk_size": defaults.CHUNK_SIZE, "concurrency": defaults.WORKER_CONCURRENCY},
        "results": results,
        "ratios": ratios,
        "max_abs_diff_between_modes": difference,
        "machine": report.machine(),
        "total_s": round(time.perf_counter() - started, 1),
    }


def table(document: dict[str, Any]) -> str:
    results, ratios = document["results"], document["ratios"]
    header = ("minilm over the mixed corpus", "items", "batches", "padded fraction", "CPU s", "items/s")
    lines = [
        (
            "before: arrival order, no token budget" if mode == "fifo" else "after: length buckets, token budget",
            f"{results[mode]['items']:,}",
            str(results[mode]["batches"]),
            f"{results[mode]['padded_fraction']:.3f}",
            f"{results[mode]['cpu_s']:.1f}",
            f"{results[mode]['items_per_s']:,.1f}",
        )
        for mode in MODES
    ]
    ratio_cells = (f"{ratios[name]:.2f}×" for name in ("padded_fraction", "cpu_s", "items_per_s"))
    lines.append(("after / before", "", "", *ratio_cells))
    return report.grid(header, lines, right={1, 2, 3, 4, 5})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.write_json(args.out, document)
    padding = document["ratios"]["padded_fraction"]
    print()
    print(table(document))
    verdict = "met" if padding <= PADDING_TARGET else "MISSED"
    print(f"\npadded fraction after / before: target at most {PADDING_TARGET:.1f}× ({verdict})")
    print(report.noise_line({mode: r["others_cores_busy"] for mode, r in document["results"].items()}))
    print(f"{document['total_s']:.0f}s in all; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
