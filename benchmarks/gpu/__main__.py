"""``python -m benchmarks.gpu OUT_DIR [--items 200000] [--device auto|cuda|cpu]``: see the package's docstring."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks import report
from benchmarks.gpu import targets
from benchmarks.gpu.run import ROOT, run
from benchmarks.stack import Terminated, raise_on_signals

DEFAULT_WEIGHTS = ROOT / "weights" / "minilm-fp16"
DEFAULT_DATA_DIR = ROOT / "benchmarks" / ".cache"
SKIPPABLE = ("host", "minilm", "agreement", "predict", "oom", "plain")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 2
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu.json, table.txt, models files and logs/")
    parser.add_argument("--items", type=int, default=200_000, help="texts in the timed load")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="python -m benchmarks.gpu_weights wrote it")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--job-size", type=int, default=10_000, help="texts per job")
    parser.add_argument("--clients", type=int, default=max(1, min(8, cores // 2)), help="client processes")
    parser.add_argument("--chunk-size", type=int, default=1024, help="BATCHERY_CHUNK_SIZE: at least a full batch")
    parser.add_argument("--concurrency", type=int, default=16, help="chunk tasks in flight in the worker")
    parser.add_argument("--api-workers", type=int, default=max(2, min(8, cores // 2)))
    parser.add_argument("--api-threads", type=int, default=8)
    parser.add_argument("--warmup-items", type=int, default=4096)
    parser.add_argument("--check-items", type=int, default=512, help="texts of the reference set checked")
    parser.add_argument("--predict-requests", type=int, default=500)
    parser.add_argument("--oom-items", type=int, default=1024, help="long texts in the out-of-memory job")
    parser.add_argument("--oom-limit-mb", type=float, default=160.0, help="the OOM worker's cap on GPU memory")
    parser.add_argument("--oom-fraction", type=float, help="cuda_memory_fraction itself, instead of --oom-limit-mb")
    parser.add_argument("--plain-pool", default="prefork")
    parser.add_argument("--plain-concurrency", type=int, default=max(1, min(8, cores)))
    parser.add_argument("--plain-seconds", type=float, default=30.0, help="how long plain Celery is measured")
    parser.add_argument("--plain-window", type=int, default=64, help="plain Celery tasks in flight")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker and the API during each timed load")
    parser.add_argument("--skip", default="", help=f"phases to leave out, comma-separated: {', '.join(SKIPPABLE)} (minilm: its load and the checks on it)")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(SKIPPABLE)
    if unknown:
        parser.error(f"--skip: unknown {sorted(unknown)}")
    args.weights = args.weights.resolve()
    if not (args.weights / "model.safetensors").is_file():
        parser.error(f"no weights in {args.weights}: run `python -m benchmarks.gpu_weights {args.weights}` first")
    return args


def document(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    checked = targets.evaluate(results)
    return {
        "command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
        "items": args.items,
        "targets": checked,
        "table": [row.as_dict() for row in targets.rows(results)],
        **results,
        "machine": report.machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    raise_on_signals()
    try:
        results = run(args, lambda partial: write(args, partial))
    except (KeyboardInterrupt, Terminated):
        print("interrupted: every process this benchmark started has been stopped; what was measured is in "
              f"{args.out / 'gpu.json'}", file=sys.stderr)
        return 130
    text = write(args, results)
    print()
    print(text)
    print(f"\n{results['total_s']:.0f}s in all; JSON in {args.out / 'gpu.json'}")
    return 0


def write(args: argparse.Namespace, results: dict[str, Any]) -> str:
    """gpu.json and table.txt as the results stand; the table's text."""
    doc = document(args, results)
    text = targets.text(results, doc["targets"])
    report.write_json(args.out / "gpu.json", doc)
    (args.out / "table.txt").write_text(text + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
