"""``python -m benchmarks.tracing [--out DIR|FILE.json] [--quick] [--rounds N] [--items N]``: what tracing costs.

1. Echo through the whole pipeline (HTTP API under gunicorn + a ``batchery worker``), on three stacks side by
   side, each with its own redis-server: ``off``, with no ``OTEL_*`` variable (tracing off: nothing is set up);
   ``on``, exporting every span of every job by OTLP/HTTP to a collector in this process; and ``sampled``, the
   same with 1 job in 10 traced (``parentbased_traceidratio``, 0.1). Jobs go to them in rotating rounds (off,
   on, sampled, then on, sampled, off, ...), so that whatever else the machine does falls on all alike; the
   report gives each side's median items/s and its ratio to ``off``.
2. What the instrumentation costs while off, timed call by call in this process: the calls a job, a chunk
   and a batch make when no tracing is set up, in ns, against the µs that one item takes end to end on the
   "off" stack. The code from before tracing cannot run beside it in one run, so this share (what the
   tracing-off code paths add per item) is the figure for "tracing off costs under 2% of echo's throughput".

Both are noisy on a shared 2-core machine: the JSON keeps every run, and the load of the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from batchery import tracing
from batchery.batching import BatchHook, Ticket, hooks
from batchery.models.registry import load_registry
from batchery.settings import Settings
from benchmarks import corpus, measure, report
from benchmarks.cpu import CpuMeter
from benchmarks.phases import WARM_ECHO_ITEMS, computed, warm_inputs
from benchmarks.stack import Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "tracing.json"
TARGET = 0.02
MODES = ("off", "on", "sampled")
#: The traced sides' span processors export every second (or every 512 spans, which comes first here)...
SCHEDULE_DELAY_MS = 1000
#: ...so that waiting this long sees a side's spans exported, and metered, before moving on.
EXPORT_DELAY_S = 1.5
LABELS = {"off": "echo, tracing off", "on": "echo, tracing on, every job", "sampled": "echo, tracing on, 1 job in 10"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report or a folder ({DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="2,000 items a job, four rounds")
    parser.add_argument("--rounds", type=int, help="jobs per side (default 6, --quick 2)")
    parser.add_argument("--items", type=int, help="items per job (default 20,000, --quick 2,000)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.items = args.items or (2_000 if args.quick else 20_000)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    return args


class Collector:
    """An OTLP/HTTP endpoint that answers every export at once and keeps the bodies, decoded after the runs
    (so that decoding takes no CPU from the stacks while they are timed)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> dict[str, int]:
        """Spans received, by name."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        counts: dict[str, int] = {}
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        counts[span.name] = counts.get(span.name, 0) + 1
        return counts


def tracing_env(mode: str, collector: Collector) -> dict[str, str]:
    """The side's OTEL_* variables: none when off."""
    if mode == "off":
        return {}
    ratio = "1.0" if mode == "on" else "0.1"
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": ratio,
        "OTEL_BSP_SCHEDULE_DELAY": str(SCHEDULE_DELAY_MS),
    }


def order(rounds: int) -> list[str]:
    """off, on, sampled, on, sampled, off, ...: each side goes first as often as another, so drift falls on all."""
    turns = [MODES[r % len(MODES) :] + MODES[: r % len(MODES)] for r in range(rounds)]
    return [mode for turn in turns for mode in turn]


def pipelines(
    args: argparse.Namespace, collector: Collector, scratch: Path
) -> tuple[dict[str, list[measure.Run]], dict[str, dict[str, float]]]:
    """The rotating echo rounds on the three stacks, each warmed first: every run, and the CPU seconds each side's
    processes (API, worker, Redis) used from the first round until their exporters had sent the last spans."""
    with contextlib.ExitStack() as exits:
        stacks = {mode: exits.enter_context(Stack(scratch / mode / "logs", scratch / mode / "data")) for mode in MODES}
        meters = {}
        for mode, stack in stacks.items():
            extra = tracing_env(mode, collector)
            api = stack.start_api(extra_env=extra)
            worker = stack.start_worker(f"echo-{mode}", ["echo"], extra_env=extra)
            computed(measure.pipeline(stack.api_url, "echo", warm_inputs(WARM_ECHO_ITEMS))[0])
            meters[mode] = CpuMeter({"api": api.process.pid, "worker": worker.process.pid, "redis": stack.redis_pid})
        time.sleep(EXPORT_DELAY_S)  # the warm-up's spans leave before the meters start
        for meter in meters.values():
            meter.start()
        runs: dict[str, list[measure.Run]] = {mode: [] for mode in MODES}
        for number, mode in enumerate(order(args.rounds)):
            inputs = corpus.texts(args.items, seed=corpus.SEED + 100 + number)
            run, outputs = measure.pipeline(stacks[mode].api_url, "echo", inputs)
            if outputs != inputs:
                raise RuntimeError("echo returned outputs that differ from its inputs")
            runs[mode].append(computed(run))
            print(f"round {number + 1}: tracing {mode}: {run.items_per_s:,.0f} items/s", file=sys.stderr)
        time.sleep(EXPORT_DELAY_S)  # the traced sides' last spans
        cpu = {mode: meter.stop() for mode, meter in meters.items()}
    return runs, cpu


def per_call_ns(call: Any, number: int = 200_000) -> float:
    """The fastest of five timings of ``number`` calls, in ns a call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def disabled_costs() -> dict[str, float]:
    """ns per job, per chunk and per batch of the code that runs when tracing is off (nothing set up)."""
    tracing.uninstall()
    spec = load_registry().get("echo")
    ticket = Ticket(1)
    worker_hooks = [BatchHook(), BatchHook()]  # a worker's own two: batch metrics and activity counts
    for hook in worker_hooks:
        hooks.add_hook(hook)
    try:
        attributes = {"batchery.job_id": "j", "batchery.model": "echo@1", "batchery.items": 1, "batchery.tier": "bulk"}

        def job() -> None:
            with tracing.span("batchery.enqueue", dict(attributes)):
                tracing.carrier()

        def chunk() -> None:
            headers = {"sent_at": 1.0}
            with tracing.sending("", headers, "j", 1, "q", "t"):
                pass
            with tracing.chunk_span(headers, "j", 1, "q", "t"):
                pass
            hooks.call("on_submit", spec, ticket)

        return {
            "job_ns": round(per_call_ns(job), 1),
            "chunk_ns": round(per_call_ns(chunk), 1),
            "batch_ns": 0.0,  # off, no batch hook is installed: a batch runs no tracing code at all
        }
    finally:
        for hook in worker_hooks:
            hooks.remove_hook(hook)


def summary(runs: list[measure.Run], cpu: dict[str, float]) -> dict[str, Any]:
    rates = [r.items_per_s for r in runs]
    items = sum(r.items for r in runs)
    return {
        "items": runs[0].items,
        "median_items_per_s": round(statistics.median(rates), 1),
        "runs_items_per_s": [round(r, 1) for r in rates],
        "cpu_s": cpu,
        "cpu_us_per_item": round(sum(cpu[group] for group in ("api", "worker", "redis")) / items * 1e6, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("OTEL_")}
    collector = Collector()
    try:
        runs, cpu = pipelines(args, collector, args.out.parent / "tracing")
    finally:
        collector.server.shutdown()
        os.environ.update(saved)
    sides = {mode: summary(runs[mode], cpu[mode]) for mode in MODES}
    off_rate = sides["off"]["median_items_per_s"]
    ratios = {mode: round(side["median_items_per_s"] / off_rate, 4) for mode, side in sides.items()}
    off_cpu = sides["off"]["cpu_us_per_item"]
    cpu_ratios = {mode: round(side["cpu_us_per_item"] / off_cpu, 4) for mode, side in sides.items()}
    costs = disabled_costs()
    chunk_size = load_registry().get("echo").chunk_size or Settings().chunk_size  # what both stacks run echo with
    per_item_ns = costs["chunk_ns"] / chunk_size + costs["job_ns"] / args.items
    item_ns = 1e9 / off_rate
    off_share = per_item_ns / item_ns
    spans = collector.spans()
    return {
        "command": " ".join(["python -m benchmarks.tracing", *sys.argv[1:]]),
        "rounds": args.rounds,
        "items_per_job": args.items,
        "sides": sides,
        "over_off": ratios,
        "cpu_over_off": cpu_ratios,
        "disabled_ns": costs,
        "chunk_size": chunk_size,
        "disabled_ns_per_item": round(per_item_ns, 2),
        "item_us_off": round(item_ns / 1000, 2),
        "disabled_share_of_item": round(off_share, 6),
        "target": f"tracing off costs under {TARGET:.0%} of echo's throughput",
        "spans_exported": spans,
        "noisy": "a shared 2-core machine: each side's runs differ by several %; compare ratios of one run only",
        "machine": {**report.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_s": round(time.perf_counter() - started, 1),
        "_table_text": text(sides, ratios, costs, chunk_size, per_item_ns, item_ns, off_share, spans),
    }


def text(
    sides: dict[str, Any],
    ratios: dict[str, float],
    costs: dict[str, float],
    chunk_size: int,
    per_item_ns: float,
    item_ns: float,
    off_share: float,
    spans: dict[str, int],
) -> str:
    off, off_cpu = sides["off"]["median_items_per_s"], sides["off"]["cpu_us_per_item"]
    rows = [
        (
            LABELS[mode],
            f"{s['items']:,}",
            f"{s['median_items_per_s']:,.0f}",
            f"{s['median_items_per_s'] / off:.3f}",
            f"{s['cpu_us_per_item']:.1f}",
            f"{s['cpu_us_per_item'] / off_cpu:.3f}",
            " ".join(f"{r:,.0f}" for r in s["runs_items_per_s"]),
        )
        for mode, s in sides.items()
    ]
    header = ("side", "items a job", "median items/s", "÷ off", "CPU µs/item", "÷ off", "runs (items/s)")
    cpu = {mode: s["cpu_us_per_item"] / off_cpu - 1 for mode, s in sides.items()}
    lines = [
        report.grid(header, rows, right={1, 2, 3, 4, 5}),
        f"tracing on: {1 - ratios['on']:.1%} less throughput and {cpu['on']:+.1%} CPU an item with every job traced; "
        f"{1 - ratios['sampled']:.1%} and {cpu['sampled']:+.1%} with 1 job in 10 ({sum(spans.values()):,} spans)",
        f"tracing off, per call: {costs['job_ns']:.0f} ns a job, {costs['chunk_ns']:.0f} ns a chunk, "
        f"{costs['batch_ns']:.0f} ns a batch",
        f"= {per_item_ns:.2f} ns an item at {chunk_size} items a chunk, against {item_ns / 1000:.1f} µs an item end "
        f"to end: {off_share:.4%} (target: under {TARGET:.0%})",
        "noisy: a shared machine; the JSON keeps every run",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.publish(args.out, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
