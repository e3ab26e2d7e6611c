"""``python -m benchmarks.pipeline [--out DIR|FILE.json] [--quick]``: batchery against its baselines, in one run.

1. ``echo`` through the whole pipeline (HTTP API under gunicorn + ``batchery worker``, a CPU pool of as many
   processes as the plain Celery worker has) against plain Celery with one task per item: what chunking,
   batching and results-in-a-hash buy over the usual way;
2. the same against plain Celery with 256-item tasks (a list in, the list back): what batchery buys over
   what a competent Celery user writes by hand. The two run at once and are timed in turn, run for run, so
   that the machine's drift hits both alike;
3. ``minilm`` through the whole pipeline against the same ONNX Runtime session looping in one process:
   what the pipeline costs on top of the model itself;
4. ``minilm-int8`` (minilm's checked int8 copy) against ``minilm`` in fp32, both through the whole pipeline on
   the same CPU pool (one one-thread process per core, as ``batchery worker`` runs on a CPU machine): what
   int8 buys end to end, and how close its vectors stay to fp32's.

Everything runs on one private redis-server, one phase after another, so that idle processes of one phase
do not take cores from the next; both sides of a comparison are warmed and timed on the same items, with
batchery's result cache off; each measurement is repeated and the median reported. The figures, the CPU
seconds each process group used and the machine go to a JSON file.
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
from benchmarks.phases import (
    Sizes, bench_echo, bench_echo_against_plain, bench_int8, bench_minilm, bench_plain, minilm_models_file,
)
from benchmarks.stack import Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pipeline.json"
#: Survives between runs (git-ignored) so that the minilm ONNX export is made once, not on every run.
DEFAULT_DATA_DIR = HERE / ".cache"
ECHO_TARGET = 20.0
#: echo end to end against plain Celery with hand-written 256-item tasks (the issue's baseline).
LISTS_TARGET = 0.6
MINILM_TARGET = 0.85
#: int8 minilm end to end against fp32 minilm end to end.
INT8_TARGET = 1.8
RATIO_MEANS = "batchery's items/s ÷ this row's items/s, on the same items"
SETTINGS_SHOWN = ("chunk_size", "worker_concurrency", "api_workers", "api_threads")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline",
        description="batchery against its baselines, result cache off: echo vs plain Celery (one item a task, "
        "and lists of items), minilm vs raw ONNX Runtime.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"JSON report, or a folder for pipeline.json (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--quick", action="store_true", help="fewer items and one repetition")
    parser.add_argument(
        "--repeat", type=int,
        help="runs per measurement; the median is reported (default 3, and 7 for echo against 256-item tasks; --quick 1)"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR (ONNX export cache)")
    parser.add_argument(
        "--plain-pools", default="prefork", help="Celery pools for both plain baselines, comma-separated"
    )
    parser.add_argument("--plain-concurrency", type=int, default=2, help="processes of the plain Celery worker")
    parser.add_argument(
        "--pool-processes", type=int,
        help="processes of batchery's CPU pools: echo's, and the int8 phase's (default: --plain-concurrency)",
    )
    parser.add_argument("--plain-task-items", type=int, default=256, help="items per task of the second plain baseline")
    parser.add_argument(
        "--minilm-threads", type=int, help="options.threads (ORT intra-op threads) for the worker and raw ORT"
    )
    parser.add_argument(
        "--skip", default="", help="phases to leave out, comma-separated: echo, plain, plain_lists, minilm, minilm_int8"
    )
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":  # a folder: the report goes in it, the logs beside it
        args.out = args.out / DEFAULT_OUT.name
    args.pool_processes = args.pool_processes or args.plain_concurrency
    return args


def rows(results: dict[str, Any]) -> list[report.Row]:
    """The table: each measured system; a baseline's row carries batchery's ratio to it, and the target."""
    table: list[report.Row] = []
    echo = results.get("echo")
    if echo is not None:
        name = f"echo: batchery (HTTP + a CPU pool ×{echo['processes']})"
        table.append(report.Row(name, echo["items"], echo["seconds"]))
    for key in ("plain", "plain_lists"):
        for p in results.get(key, {}).values():
            name = f"echo: plain Celery {p['pool']} ×{p['concurrency']}, {_items_a_task(p['task_items'])}"
            table.append(_baseline(name, p, echo, _echo_target(p["task_items"])))
    if "minilm" in results:
        pipe, raw = results["minilm"]["pipeline"], results["minilm"]["raw"]
        table.append(report.Row("minilm: batchery (HTTP + worker)", pipe["items"], pipe["seconds"]))
        name = f"minilm: raw ONNX Runtime ({raw['intra_op_threads']} threads)"
        table.append(_baseline(name, raw, pipe, f"batchery ≥ {MINILM_TARGET}× this"))
    if "minilm_int8" in results:
        int8, fp32 = results["minilm_int8"]["int8"], results["minilm_int8"]["fp32"]
        pool = f"HTTP + a CPU pool ×{int8['processes']}"
        table.append(report.Row(f"minilm int8: batchery ({pool})", int8["items"], int8["seconds"]))
        table.append(_baseline(f"minilm fp32: batchery ({pool})", fp32, int8, f"int8 ≥ {INT8_TARGET}× this"))
    return table


def _echo_target(task_items: int) -> str:
    """The target against plain Celery with one item a task, and against its hand-written 256-item tasks."""
    target = {1: ECHO_TARGET, 256: LISTS_TARGET}.get(task_items)
    return "none set" if target is None else f"batchery ≥ {target:g}× this"


def _items_a_task(count: int) -> str:
    return "1 item a task" if count == 1 else f"{count} items a task"


def _baseline(name: str, baseline: dict[str, Any], batchery: dict[str, Any] | None, target: str) -> report.Row:
    """A baseline's row, with batchery's items/s over its own when batchery was measured too.

    A ratio of runs over different item counts would fold in whatever a run's length changes (start-up,
    the last chunk's tail), so the two sides must have timed the same number of items.
    """
    if batchery is None:
        return report.Row(name, baseline["items"], baseline["seconds"], None, "baseline")
    if batchery["items"] != baseline["items"]:
        raise ValueError(f"{name}: {baseline['items']} items against batchery's {batchery['items']}")
    ratio = batchery["items_per_s"] / baseline["items_per_s"]
    return report.Row(name, baseline["items"], baseline["seconds"], ratio, target)


def measurements(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measurement's summary, by a dotted name."""
    found = [("echo", results["echo"])] if "echo" in results else []
    for key in ("plain", "plain_lists"):
        found += [(f"{key}.{pool}", p) for pool, p in results.get(key, {}).items()]
    found += [(f"minilm.{kind}", m) for kind, m in results.get("minilm", {}).items()]
    found += [(f"minilm_int8.{kind}", m) for kind, m in results.get("minilm_int8", {}).items()]
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of(args.quick, args.repeat)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with Stack(args.out.parent / "logs", args.data_dir) as stack:
        models_file = minilm_models_file(stack, args.minilm_threads)
        stack.settings = dataclasses.replace(stack.settings, models_file=str(models_file))
        api = stack.start_api()
        pools = [p.strip() for p in args.plain_pools.split(",") if p.strip()]
        if "echo" not in skip and "plain_lists" not in skip and pools:  # the ratio that counts: runs alternated
            results["echo"], lists = bench_echo_against_plain(
                stack, api, sizes, args.pool_processes, pools[0], args.plain_concurrency, args.plain_task_items
            )
            results["plain_lists"] = {pools[0]: lists}
        elif "echo" not in skip:
            results["echo"] = bench_echo(stack, api, sizes, args.pool_processes)
        for key, task_items in (("plain", 1), ("plain_lists", args.plain_task_items)):
            if key not in skip:
                done = results.setdefault(key, {})
                for pool in pools:
                    if pool not in done:
                        done[pool] = bench_plain(stack, pool, args.plain_concurrency, sizes, task_items)
        if "minilm" not in skip:
            results["minilm"] = bench_minilm(stack, api, sizes)
        if "minilm_int8" not in skip:
            results["minilm_int8"] = bench_int8(stack, api, sizes, args.pool_processes)
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
        "table": [row.as_dict() for row in table],
        "ratio_means": RATIO_MEANS,
        "others_cores_busy": noise,
        "results": results,
        "machine": {**report.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_s": round(time.perf_counter() - started, 1),
        "_table_text": report.table(table, "batchery ÷ this") + "\n" + report.noise_line(noise),
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
