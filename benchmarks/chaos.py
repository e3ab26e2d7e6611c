"""``python -m benchmarks.chaos [--quick] [--out PATH]``: what faults and a killed worker cost, in one run.

1. Throughput with transient faults injected into a tenth of the batches, as a share of the same worker's
   fault-free throughput (target: at least 0.8), with the faults counted and every item checked.
2. The seconds a worker SIGKILLed when a tenth of a job is done costs that job, against the same job with
   both workers alive, with the service's own settings: the dead worker's chunks come back once its
   heartbeat is gone, whatever the broker's visibility timeout.
3. A job waiting on another job's computations, the other cancelled at a tenth, with faults injected into
   the handoffs that send the waiting items to be computed anew: it must still come back whole.

The model is a synthetic echo with a cost curve (a fixed cost per batch plus a cost per item), so what is
measured is batchery's handling of the faults, not a model's speed. Both measurements run on one private
stack, in pairs, repeated; the median pair is printed and every pair goes to the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from batchery.retry import RetryPolicy
from benchmarks import report
from benchmarks.disruption import (
    FAULTY, STEADY, CostCurve, Inputs, fault_pairs, kill_pairs, models_toml, shared_runs, warm_up,
)
from benchmarks.pipeline import DEFAULT_DATA_DIR
from benchmarks.stack import Stack, run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "chaos.json"
FAULT_TARGET = 0.8
SETTINGS_SHOWN = (
    "chunk_size",
    "worker_concurrency",
    "visibility_timeout_s",
    "worker_heartbeat_ttl_s",
    "fault_handoff_rate",
    "retry_attempts",
    "retry_base_s",
    "retry_max_s",
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Items per job in each measurement, and pairs per measurement."""

    fault_items: int
    kill_items: int
    repeat: int

    @classmethod
    def of(cls, quick: bool, repeat: int | None) -> "Sizes":
        sizes = cls(2_000, 4_000, 1) if quick else cls(8_000, 16_000, 3)
        return dataclasses.replace(sizes, repeat=repeat or sizes.repeat)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON report, or a folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--quick", action="store_true", help="smaller jobs and one pair of each")
    parser.add_argument("--repeat", type=int, help="pairs per measurement (default 3, --quick 1)")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of batches that raise a transient fault")
    parser.add_argument("--kill-at", type=float, default=0.1, help="share of the job done when a worker is killed")
    parser.add_argument("--visibility-timeout-s", type=int, default=600, help="BATCHERY_VISIBILITY_TIMEOUT_S")
    parser.add_argument(
        "--handoff-fault-rate", type=float, default=0.2, help="BATCHERY_FAULT_HANDOFF_RATE: handoff steps that fail half-way"
    )
    parser.add_argument(
        "--retry-attempts",
        type=int,
        default=6,
        help="BATCHERY_RETRY_ATTEMPTS; at a fault rate of 0.1 the default 3 ends one batch in 1,000 as dead letters",
    )
    parser.add_argument("--batch-latency-ms", type=float, default=20.0, help="the synthetic model's cost per batch")
    parser.add_argument("--item-latency-ms", type=float, default=0.5, help="the synthetic model's cost per item")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    return args


def expected_fault_ratio(curve: CostCurve, rate: float, policy: RetryPolicy) -> float:
    """The ratio the retry policy implies for full batches: an injected fault raises before the model runs,
    so a faulted attempt costs only its backoff, through which the model sits idle (the run thread owns the
    model and sleeps in the retry). A yardstick for the measured figure, which also pays for HTTP and Redis."""
    batch_s = curve.full_batch_ms / 1000
    waits_s = [min(policy.max_s, policy.base_s * 2 ** (n - 1) + policy.base_s / 2) for n in range(1, policy.retries + 1)]
    return batch_s / (batch_s + sum(rate**n * wait for n, wait in enumerate(waits_s, start=1)))


def add_capacity_estimate(kill: dict[str, Any], one_worker_items_per_s: float) -> None:
    """Split each killed run's time: what the survivor alone needed for the items left at the kill (the
    capacity lost), and the rest, which is the wait for the dead worker's chunks to come back; that wait
    shows only when the survivor runs out of other work before the visibility timeout passes."""
    for pair in kill["pairs"]:
        killed = pair["killed"]
        alone_s = killed["killed_at_s"] + (killed["items"] - killed["done_when_killed"]) / one_worker_items_per_s
        killed["survivor_alone_s"] = round(alone_s, 3)
        killed["beyond_lost_capacity_s"] = round(killed["seconds"] - alone_s, 3)
    kill["beyond_lost_capacity_s"] = _median([p["killed"]["beyond_lost_capacity_s"] for p in kill["pairs"]])


def rows(results: dict[str, Any]) -> list[report.Row]:
    """The median pair of each measurement: its baseline, then the disrupted run with its ratio."""
    faults, kill = results["faults"], results["kill"]
    f = _median_pair(faults["pairs"])
    k = _median_pair(kill["pairs"])
    rate = results["fault_rate"]
    return [
        report.Row("echo, 1 worker, no faults", f["steady"]["items"], f["steady"]["seconds"], None, "baseline"),
        report.Row(
            f"echo, 1 worker, transient faults in {rate:.0%} of batches",
            f["faulty"]["items"],
            f["faulty"]["seconds"],
            f["ratio"],
            f"≥ {FAULT_TARGET}× (expected {faults['expected_ratio']:.2f}×)",
        ),
        report.Row(
            "echo, 2 workers, undisturbed", k["undisturbed"]["items"], k["undisturbed"]["seconds"], None, "baseline"
        ),
        report.Row(
            f"echo, 2 workers, one SIGKILLed at {results['kill_at']:.0%}",
            k["killed"]["items"],
            k["killed"]["seconds"],
            k["ratio"],
            f"+{k['extra_s']:.1f}s (heartbeat TTL {results['settings']['worker_heartbeat_ttl_s']:g}s)",
        ),
    ]


def summary_lines(results: dict[str, Any]) -> list[str]:
    faults, kill = results["faults"], results["kill"]
    repeat = len(faults["pairs"])
    return [
        f"faults: ratio {faults['ratio']:.2f}× (median of {repeat}, {_range(faults['ratio_range'])}); "
        f"{faults['injected_transient']} transient faults injected and retried; "
        f"{faults['dead_letters']} dead letters; every item succeeded exactly once: {faults['all_exactly_once']}",
        f"kill: ratio {kill['ratio']:.2f}× (median of {repeat}, {_range(kill['ratio_range'])}); "
        f"extra {kill['extra_s']:.1f}s ({_range(kill['extra_s_range'], '.1f')}); "
        f"every item succeeded exactly once: {kill['all_exactly_once']}; "
        f"{kill['beyond_lost_capacity_s']:.1f}s beyond what one worker alone needs from the kill on",
        f"shared: owner cancelled at {results['kill_at']:.0%}; {results['shared']['handoff_faults']} handoff faults "
        f"injected; the waiting job came back whole every time: {results['shared']['all_exactly_once']}",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of(args.quick, args.repeat)
    curve = CostCurve(args.batch_latency_ms, args.item_latency_ms, args.max_batch_size)
    started = time.perf_counter()
    load_before = os.getloadavg()
    inputs = Inputs()
    with Stack(args.out.parent / "logs" / "chaos", args.data_dir) as stack:
        models_file = stack.scratch / "models.toml"
        models_file.write_text(models_toml(curve, args.fault_rate))
        stack.settings = dataclasses.replace(
            stack.settings,
            models_file=str(models_file),
            visibility_timeout_s=args.visibility_timeout_s,
            retry_attempts=args.retry_attempts,
            fault_handoff_rate=args.handoff_fault_rate,
        )
        settings = stack.settings
        stack.start_api()
        survivor = stack.start_worker("chaos-survivor", [STEADY, FAULTY])
        warm_up(stack, (STEADY, FAULTY), inputs)
        faults = fault_pairs(stack, survivor, sizes.fault_items, sizes.repeat, inputs)
        kill = kill_pairs(stack, settings, sizes.kill_items, sizes.repeat, args.kill_at, inputs)
        shared = shared_runs(stack, [survivor], sizes.fault_items, sizes.repeat, args.kill_at, inputs)
    policy = RetryPolicy(settings.retry_attempts, settings.retry_base_s, settings.retry_max_s)
    faults["expected_ratio"] = round(expected_fault_ratio(curve, args.fault_rate, policy), 4)
    add_capacity_estimate(kill, _median([p["steady"]["items_per_s"] for p in faults["pairs"]]))
    results = {
        "command": " ".join(["python -m benchmarks.chaos", *sys.argv[1:]]),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "model": {**dataclasses.asdict(curve), "full_batch_ms": curve.full_batch_ms, "synthetic": True},
        "fault_rate": args.fault_rate,
        "kill_at": args.kill_at,
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k in SETTINGS_SHOWN},
        "faults": faults,
        "kill": kill,
        "shared": shared,
    }
    table = rows(results)
    return {
        **results,
        "table": [row.as_dict() for row in table],
        "machine": {**report.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_s": round(time.perf_counter() - started, 1),
        "_table_text": "\n".join([report.table(table), "", *summary_lines(results)]),
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _range(bounds: list[float], spec: str = ".2f") -> str:
    return f"{bounds[0]:{spec}}-{bounds[1]:{spec}}"


def _median_pair(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair with the median ratio (the lower middle one of an even count)."""
    ordered = sorted(pairs, key=lambda p: p["ratio"])
    return ordered[(len(ordered) - 1) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.publish(args.out, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
