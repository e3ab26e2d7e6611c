"""``python -m benchmarks.tiers [--quick] [--out PATH]``: tiers and fair share on one shared model, one run.

A synthetic echo that costs 10 ms a batch plus 0.5 ms an item, in batches of 32 (a device's cost curve, so
what is measured is batchery's scheduling, not a model), served by ``batchery worker`` (a supervised pool of
two processes), the API under gunicorn, and a private Redis. Every job sends new inputs with the cache off.

1. **Interactive beside bulk.** A bulk job alone; then the same size again while a one-item ``predict`` (the
   interactive tier) is sent every 200 ms: the predicts' latencies, and the bulk job's throughput beside them
   against alone.
2. **Fair share in a tier.** A big standard job; one second later a 256-item standard job: how long the small
   one takes from its submission to its last result.
3. **A worker SIGKILLed** while a standard job, a bulk job and the interactive trickle run: every item of
   every job must come back exactly once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import requests

from batchery.store.heartbeats import read_workers
from benchmarks import report
from benchmarks.pipeline import DEFAULT_DATA_DIR
from benchmarks.stack import Stack, run_interruptibly
from benchmarks.watch import Outcome, submit, watched_job

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "tiers.json"
MODEL = "echo-tiers"
MODELS_TOML = f"""
[models.{MODEL}]
runtime = "echo"
input = "json"
max_batch_size = 32
max_wait_ms = 2
description = "synthetic: the tiers benchmark's echo, 10 ms a batch + 0.5 ms an item"
[models.{MODEL}.options]
batch_latency_ms = 10
item_latency_ms = 0.5
"""
TARGETS = {"predict_p99_ms": 250.0, "small_job_s": 3.0, "bulk_ratio": 0.9}


@dataclasses.dataclass(frozen=True)
class Sizes:
    bulk_items: int
    big_items: int
    small_items: int
    kill_items: int

    @classmethod
    def of(cls, quick: bool) -> "Sizes":
        return cls(8_000, 20_000, 256, 6_000) if quick else cls(40_000, 100_000, 256, 20_000)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiers", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report, or a folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="smaller jobs (for the test suite)")
    parser.add_argument("--predict-every-s", type=float, default=0.2)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    return args


def fresh(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{run}-{i}" for i in range(count)]


class Trickle:
    """One-item predicts every ``every_s`` on a thread of its own, each with a new input, until stopped."""

    def __init__(self, api_url: str, every_s: float) -> None:
        self.api_url = api_url
        self.every_s = every_s
        self.latencies_ms: list[float] = []
        self.statuses: list[int] = []
        self.wrong = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Trickle":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        http = requests.Session()
        next_at = time.monotonic()
        while not self._stop.is_set():
            value = fresh(1)[0]
            started = time.perf_counter()
            response = http.post(f"{self.api_url}/v1/models/{MODEL}/predict", json={"inputs": [value]}, timeout=60)
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.statuses.append(response.status_code)
            if response.status_code != 200 or response.json()["outputs"] != [value]:
                self.wrong += 1
            next_at += self.every_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "predicts": len(ordered),
            "all_200": all(status == 200 for status in self.statuses) and not self.wrong,
            "p50_ms": round(_percentile(ordered, 50), 1),
            "p95_ms": round(_percentile(ordered, 95), 1),
            "p99_ms": round(_percentile(ordered, 99), 1),
            "max_ms": round(ordered[-1], 1) if ordered else None,
        }


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def interactive_beside_bulk(stack: Stack, sizes: Sizes, every_s: float) -> dict[str, Any]:
    alone = watched_job(stack.api_url, MODEL, fresh(sizes.bulk_items), tier="bulk")
    with Trickle(stack.api_url, every_s) as trickle:
        beside = watched_job(stack.api_url, MODEL, fresh(sizes.bulk_items), tier="bulk")
    return {
        "bulk_alone": alone.as_dict(),
        "bulk_beside_predicts": beside.as_dict(),
        "bulk_ratio": round(beside.items_per_s / alone.items_per_s, 4),
        "predicts": trickle.summary(),
    }


def small_behind_big(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    http = requests.Session()
    big_inputs, small_inputs = fresh(sizes.big_items), fresh(sizes.small_items)
    big = submit(http, stack.api_url, MODEL, big_inputs)
    time.sleep(1.0)
    small = watched_job(stack.api_url, MODEL, small_inputs)
    big_outcome = watched_job(stack.api_url, MODEL, big_inputs, job=big)
    return {"small": small.as_dict(), "small_s": round(small.seconds, 3), "big": big_outcome.as_dict()}


def through_a_kill(stack: Stack, sizes: Sizes, every_s: float) -> dict[str, Any]:
    http = requests.Session()
    standard_inputs, bulk_inputs = fresh(sizes.kill_items), fresh(sizes.kill_items)
    standard = submit(http, stack.api_url, MODEL, standard_inputs)
    bulk = submit(http, stack.api_url, MODEL, bulk_inputs, tier="bulk")
    with Trickle(stack.api_url, every_s) as trickle:
        time.sleep(1.5)
        victim = next(w for w in read_workers(stack_client(stack)) if w["hostname"].startswith("cpu0@"))
        os.kill(victim["pid"], signal.SIGKILL)
        outcomes = [
            watched_job(stack.api_url, MODEL, standard_inputs, job=standard),
            watched_job(stack.api_url, MODEL, bulk_inputs, job=bulk),
        ]
    return {
        "killed": victim["hostname"],
        "jobs": [o.as_dict() for o in outcomes],
        "predicts": trickle.summary(),
        "all_exactly_once": all(o.exactly_once for o in outcomes) and trickle.summary()["all_200"],
    }


def stack_client(stack: Stack) -> Any:
    import redis

    return redis.Redis.from_url(stack.settings.effective_redis_url)


def start_pool(stack: Stack) -> None:
    """``batchery worker``: a supervised pool of two CPU processes, ready once both are live."""
    import sys

    env = stack.env(extra={"BATCHERY_WORKER_PROCESSES": "2", "BATCHERY_WORKER_DEVICES": "cpu"})
    child = stack.spawn("pool", [sys.executable, "-m", "batchery", "worker", "--models", MODEL], env)
    client = stack_client(stack)
    stack._wait(child, 120, lambda: sum(w["hostname"].split("@")[0] in ("cpu0", "cpu1") for w in read_workers(client)) == 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of(args.quick)
    started = time.perf_counter()
    with Stack(args.out.parent / "logs" / "tiers", args.data_dir) as stack:
        models = stack.scratch / "models.toml"
        models.write_text(MODELS_TOML)
        stack.settings = dataclasses.replace(stack.settings, models_file=str(models))
        stack.start_api()
        start_pool(stack)
        watched_job(stack.api_url, MODEL, fresh(512))  # warm: connections, gunicorn workers, batcher threads
        beside = interactive_beside_bulk(stack, sizes, args.predict_every_s)
        fair = small_behind_big(stack, sizes)
        kill = through_a_kill(stack, sizes, args.predict_every_s)
    figures = {
        "predict_p99_ms": beside["predicts"]["p99_ms"],
        "small_job_s": fair["small_s"],
        "bulk_ratio": beside["bulk_ratio"],
    }
    met = {
        "predict_p99_ms": figures["predict_p99_ms"] < TARGETS["predict_p99_ms"] and beside["predicts"]["all_200"],
        "small_job_s": figures["small_job_s"] < TARGETS["small_job_s"],
        "bulk_ratio": figures["bulk_ratio"] >= TARGETS["bulk_ratio"],
        "exactly_once": kill["all_exactly_once"] and beside["bulk_beside_predicts"]["exactly_once"] and fair["small"]["exactly_once"],
    }
    p = beside["predicts"]
    lines = [
        ("predict (interactive) beside a bulk job", f"p50 {p['p50_ms']:.0f} / p95 {p['p95_ms']:.0f} / p99 {p['p99_ms']:.0f} ms, {p['predicts']} sent, all 200: {p['all_200']}", f"p99 < {TARGETS['predict_p99_ms']:.0f} ms"),
        ("bulk job beside the predicts, against alone", f"{beside['bulk_ratio']:.2f}×", f"≥ {TARGETS['bulk_ratio']}×"),
        (f"{sizes.small_items}-item job 1 s after a {sizes.big_items:,}-item job, same tier", f"{fair['small_s']:.2f} s", f"< {TARGETS['small_job_s']:.0f} s"),
        ("a worker SIGKILLed under all three tiers", f"every item exactly once: {kill['all_exactly_once']}", "exactly once"),
    ]
    text = report.grid(("what", "measured", "target"), lines, right=set())
    return {
        "benchmark": "tiers", "quick": args.quick, "sizes": dataclasses.asdict(sizes), "model": MODELS_TOML.strip(),
        "figures": figures, "targets": TARGETS, "met": met,
        "interactive_beside_bulk": beside, "fair_share": fair, "kill": kill,
        "machine": report.machine(), "total_s": round(time.perf_counter() - started, 1), "_table_text": text,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.publish(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
