"""``python -m benchmarks.batch_size [--sizes 1,8,32,128] [--quick] [--out FILE.json] [--chart FILE.png]``

What ``max_batch_size`` buys and costs: throughput and p95 end-to-end latency at several batch sizes, under
the same closed-loop load of predict requests (HTTP API under gunicorn, a ``batchery worker``, one private
redis-server). The model is synthetic, ``echo`` with a device's cost curve (a fixed cost per batch plus a
cost per item, as a GPU has), so the figures show the batcher and the pipeline rather than a CPU model that
the client and the API would compete with for the same two cores. Each size is its own model in one
worker (``echo-curve-b<size>``), measured one after another. Batch fill comes from the workers' activity
counters, read back through ``/v1/overview`` as the jobs page reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import requests

from benchmarks import report
from benchmarks.cpu import CpuMeter
from benchmarks.load import LoadRun, closed_loop
from benchmarks.pipeline import DEFAULT_DATA_DIR
from benchmarks.stack import Child, Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "batch_size.json"
log = logging.getLogger("benchmarks")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_size", description=__doc__.splitlines()[2])
    parser.add_argument("--sizes", default="1,8,32,128", help="max_batch_size values, comma-separated")
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 s a size)")
    parser.add_argument("--seconds", type=float, help="measured seconds per size (default 10, --quick 2)")
    parser.add_argument("--warmup", type=float, help="least seconds of load before measuring, which waits for every client's first answer too (default 2, --quick 0.5)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients, each one request at a time")
    parser.add_argument("--items-per-request", type=int, default=32)
    parser.add_argument("--batch-latency-ms", type=float, default=10.0, help="the model's cost per batch")
    parser.add_argument("--item-latency-ms", type=float, default=0.2, help="the model's cost per item")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default: {DEFAULT_OUT})")
    parser.add_argument("--chart", type=Path, help="PNG chart (default: the JSON report's path with .png)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.chart = args.chart or args.out.with_suffix(".png")
    return args


def model_name(size: int) -> str:
    return f"echo-curve-b{size}"


def models_toml(args: argparse.Namespace) -> str:
    """One synthetic model per batch size, identical but for ``max_batch_size``."""
    return "".join(
        f'[models.{model_name(size)}]\nruntime = "echo"\ninput = "json"\nmax_batch_size = {size}\n'
        f"max_wait_ms = {args.max_wait_ms}\n"
        f'description = "synthetic: echo with a cost curve, for the batch size benchmark"\n'
        f"[models.{model_name(size)}.options]\nbatch_latency_ms = {args.batch_latency_ms}\n"
        f"item_latency_ms = {args.item_latency_ms}\n\n"
        for size in args.sizes
    )


def ceiling(args: argparse.Namespace, size: int) -> float:
    """The model's own items/s with every batch full: what no pipeline can beat."""
    return size * 1000 / (args.batch_latency_ms + args.item_latency_ms * size)


def activity(api_url: str, model: str, seconds: float) -> dict[str, Any]:
    """The model's batch fill over the run, once the run's last second is complete and counted."""
    time.sleep(1.1 - time.time() % 1)
    window_s = min(60, math.ceil(seconds) + 1)
    doc = requests.get(f"{api_url}/v1/overview", params={"jobs": 1, "window_s": window_s}, timeout=10).json()
    return next(m for m in doc["models"] if m["name"] == model)


def measure(stack: Stack, args: argparse.Namespace, size: int, processes: dict[str, Child]) -> dict[str, Any]:
    """One size under load, with the CPU seconds of every process group (and of the rest of the machine)."""
    model = model_name(size)
    log.info("max_batch_size %d: %d clients × %d items for %.0f s", size, args.clients, args.items_per_request, args.seconds)
    groups = {name: child.process.pid for name, child in processes.items()} | {"redis": stack.redis_pid}
    meter = CpuMeter(groups).start()
    started = time.perf_counter()
    run = closed_loop(
        f"{stack.api_url}/v1/models/{model}/predict", args.clients, args.items_per_request, args.warmup, args.seconds
    )
    wall_s = time.perf_counter() - started
    cores_busy = {name: round(cpu_s / wall_s, 2) for name, cpu_s in meter.stop().items()}
    seen = activity(stack.api_url, model, wall_s)
    return result(args, size, run, seen) | {"cores_busy": cores_busy}


def result(args: argparse.Namespace, size: int, run: LoadRun, seen: dict[str, Any]) -> dict[str, Any]:
    fill = seen["batch_fill"]
    return {
        "max_batch_size": size,
        "model": model_name(size),
        "requests": len(run.latencies_s),
        "items": run.items,
        "seconds": run.seconds,
        "items_per_s": round(run.items_per_s, 1),
        "latency_ms": {f"p{p}": round(run.latency_ms(p), 2) for p in (50, 95, 99)},
        "batch_fill": fill,
        "items_per_batch": None if fill is None else round(fill * size, 2),
        "model_ceiling_items_per_s": round(ceiling(args, size), 1),
    }


def table(results: list[dict[str, Any]]) -> str:
    """One row per size, with throughput and p95 as ratios to the smallest size, all from this run."""
    base = results[0]
    header = ("max_batch_size", "items/s", "× items/s", "p50 ms", "p95 ms", "× p95", "items/batch", "model ceiling")
    rows = [
        (
            str(r["max_batch_size"]),
            f"{r['items_per_s']:,.0f}",
            f"{r['items_per_s'] / base['items_per_s']:.2f}×",
            f"{r['latency_ms']['p50']:,.1f}",
            f"{r['latency_ms']['p95']:,.1f}",
            f"{r['latency_ms']['p95'] / base['latency_ms']['p95']:.2f}×",
            "–" if r["items_per_batch"] is None else f"{r['items_per_batch']:.1f}",
            f"{r['model_ceiling_items_per_s']:,.0f}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def chart(document: dict[str, Any], path: Path) -> None:
    """Throughput and latency against ``max_batch_size``, side by side, on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    results = document["results"]
    sizes = [r["max_batch_size"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.plot(sizes, [r["items_per_s"] for r in results], "o-", color="#2f6fdd", label="measured, end to end")
    left.plot(sizes, [r["model_ceiling_items_per_s"] for r in results], "--", color="#9aa3b5", label="model alone, full batches")
    left.set(title="throughput (labels: mean items per batch)", ylabel="items/s", ylim=(0, None))
    for r in results:
        if r["items_per_batch"] is not None:
            left.annotate(f"{r['items_per_batch']:.0f}", (r["max_batch_size"], r["items_per_s"]),
                          textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8, color="#2f6fdd")
    for percentile, style in (("p50", "o--"), ("p95", "o-")):
        right.plot(sizes, [r["latency_ms"][percentile] for r in results], style, color="#d64545", label=percentile)
    right.set(title="end-to-end latency per item", ylabel="ms", yscale="log")
    right.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    right.yaxis.set_minor_formatter(NullFormatter())
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [str(s) for s in sizes])
        axes.set_xlabel("max_batch_size")
        axes.grid(True, alpha=0.3)
        axes.legend(frameon=False)
    load = document["load"]
    figure.suptitle(
        f"batchery, synthetic echo model ({load['batch_latency_ms']:g} ms a batch + {load['item_latency_ms']:g} ms an item), "
        f"{load['clients']} clients × {load['items_per_request']} items a request",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    with Stack(args.out.parent / "logs", DEFAULT_DATA_DIR) as stack:
        models_file = stack.scratch / "models.toml"
        models_file.write_text(models_toml(args))
        # Every client's request holds an API thread and a worker thread while it waits, so both get one each.
        stack.settings = dataclasses.replace(
            stack.settings, models_file=str(models_file), worker_concurrency=args.clients, api_threads=args.clients
        )
        processes = {"api": stack.start_api(), "worker": stack.start_worker("curve", [model_name(s) for s in args.sizes])}
        results = [measure(stack, args, size, processes) for size in args.sizes]
        settings = {k: getattr(stack.settings, k) for k in ("worker_concurrency", "api_workers", "api_threads", "chunk_size")}
    return {
        "command": " ".join(["python -m benchmarks.batch_size", *sys.argv[1:]]),
        "quick": args.quick,
        "load": {
            "clients": args.clients,
            "items_per_request": args.items_per_request,
            "warmup_s": args.warmup,
            "measure_s": args.seconds,
            "batch_latency_ms": args.batch_latency_ms,
            "item_latency_ms": args.item_latency_ms,
            "max_wait_ms": args.max_wait_ms,
        },
        "settings": settings,
        "results": results,
        "machine": {**report.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_s": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    document["chart"] = str(args.chart)
    report.write_json(args.out, document)
    chart(document, args.chart)
    print()
    print(table(document["results"]))
    print(report.noise_line({f"max_batch_size {r['max_batch_size']}": r["cores_busy"]["others"] for r in document["results"]}))
    print(f"\n{document['total_s']:.0f}s in all; JSON in {args.out}, chart in {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
