"""``python -m benchmarks.pipeline [--out DIR|FILE.json] [--quick]``: batchery against its baselines, in one run.

1. ``echo`` through the whole pipeline (HTTP API under gunicorn + a ``batchery worker``) against plain
   Celery with one task per item: what chunking, batching and results-in-a-hash buy over the usual way.
2. ``minilm`` through the whole pipeline against the same ONNX Runtime session looping in one process:
   what the pipeline costs on top of the model itself.

Everything runs on one private redis-server, one phase after another, so that idle processes of one phase
do not take cores from the next; each measurement is repeated and the median reported. The figures, the
CPU seconds each process group used and the machine go to a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from batchery.models.registry import load_registry
from benchmarks import report
from benchmarks.phases import Sizes, bench_echo, bench_minilm, bench_plain
from benchmarks.stack import Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pipeline.json"
#: Survives between runs (git-ignored) so that the minilm ONNX export is made once, not on every run.
DEFAULT_DATA_DIR = HERE / ".cache"
ECHO_TARGET = 20.0
MINILM_TARGET = 0.85
SETTINGS_SHOWN = ("chunk_size", "worker_concurrency", "api_workers", "api_threads")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline",
        description="batchery against its baselines: echo vs plain Celery, minilm vs raw ONNX Runtime.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"JSON report, or a folder for pipeline.json (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--quick", action="store_true", help="fewer items and one repetition")
    parser.add_argument(
        "--repeat", type=int, help="runs per measurement; the median is reported (default 3, --quick 1)"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR (ONNX export cache)")
    parser.add_argument(
        "--plain-pools", default="prefork,threads", help="Celery pools for the baseline, comma-separated"
    )
    parser.add_argument("--plain-concurrency", type=int, default=2)
    parser.add_argument(
        "--minilm-threads", type=int, help="options.threads (ORT intra-op threads) for the worker and raw ORT"
    )
    parser.add_argument(
        "--poll-s", type=float, default=0.02, help="first job status polling interval (it backs off to 2%% of the wait)"
    )
    parser.add_argument("--skip", default="", help="phases to leave out, comma-separated: echo, plain, minilm")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":  # a folder: the report goes in it, the logs beside it
        args.out = args.out / DEFAULT_OUT.name
    return args


def rows(results: dict[str, Any]) -> list[report.Row]:
    """The table: each measured system, with its ratio on the row that has a target."""
    table: list[report.Row] = []
    plain = results.get("plain", {})
    best_plain = max(plain.values(), key=lambda p: p["items_per_s"]) if plain else None
    if "echo" in results:
        echo = results["echo"]
        ratio = echo["items_per_s"] / best_plain["items_per_s"] if best_plain else None
        vs = f" vs plain {best_plain['pool']}" if best_plain else ""
        table.append(
            report.Row(
                "echo: batchery (HTTP + worker)", echo["items"], echo["seconds"], ratio, f"≥ {ECHO_TARGET:.0f}×{vs}"
            )
        )
    for pool, p in plain.items():
        table.append(
            report.Row(f"echo: plain Celery, {pool} ×{p['concurrency']}", p["items"], p["seconds"], None, "baseline")
        )
    if "minilm" in results:
        pipe, raw = results["minilm"]["pipeline"], results["minilm"]["raw"]
        ratio = pipe["items_per_s"] / raw["items_per_s"]
        table.append(
            report.Row(
                "minilm: batchery (HTTP + worker)", pipe["items"], pipe["seconds"], ratio, f"≥ {MINILM_TARGET}× vs raw"
            )
        )
        table.append(
            report.Row(
                f"minilm: raw ONNX Runtime ({raw['intra_op_threads']} threads)",
                raw["items"],
                raw["seconds"],
                None,
                "baseline",
            )
        )
    return table


def measurements(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measurement's summary, by a dotted name."""
    found = [("echo", results["echo"])] if "echo" in results else []
    found += [(f"plain.{pool}", p) for pool, p in results.get("plain", {}).items()]
    found += [(f"minilm.{kind}", m) for kind, m in results.get("minilm", {}).items()]
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of(args.quick, args.repeat)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with Stack(args.out.parent / "logs", args.data_dir) as stack:
        api = stack.start_api()
        if "echo" not in skip:
            results["echo"] = bench_echo(stack, api, sizes, args.poll_s)
        if "plain" not in skip:
            pools = [p.strip() for p in args.plain_pools.split(",") if p.strip()]
            results["plain"] = {pool: bench_plain(stack, pool, args.plain_concurrency, sizes) for pool in pools}
        if "minilm" not in skip:
            results["minilm"] = bench_minilm(stack, api, sizes, args.poll_s, args.minilm_threads)
        settings = {k: v for k, v in dataclasses.asdict(stack.settings).items() if k in SETTINGS_SHOWN}
    registry = load_registry()
    table = rows(results)
    noise = {name: m["cores_busy"].get("others", 0.0) for name, m in measurements(results)}
    return {
        "command": " ".join(["python -m benchmarks.pipeline", *sys.argv[1:]]),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "settings": settings,
        "models": {name: registry.get(name).describe() for name in ("echo", "minilm")},
        "minilm_threads_override": args.minilm_threads,
        "poll_s": args.poll_s,
        "table": [row.as_dict() for row in table],
        "others_cores_busy": noise,
        "results": results,
        "machine": {**report.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_s": round(time.perf_counter() - started, 1),
        "_table_text": report.table(table) + "\n" + report.noise_line(noise),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.publish(args.out, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
