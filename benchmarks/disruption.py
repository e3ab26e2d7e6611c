"""The chaos benchmark's two measurements, each a series of pairs run on one stack, one pair after another.

1. :func:`fault_pairs`: one worker serves two synthetic echo models with the same cost curve, one of them
   with transient faults injected; a job on each, order alternated pair by pair so that drift in a shared
   machine hits both alike. The faults take the real path: the batch raises, the retry policy backs off and
   runs it again.
2. :func:`kill_pairs`: two workers serve the fault-free model; a job runs undisturbed, then the same size
   again with one worker SIGKILLed once a tenth of the items are done. The dead worker's chunks come back
   once its heartbeat is gone (the janitor puts them back; the broker's visibility timeout plays no part)
   and finish on the other.
3. :func:`shared_runs`: a job, and a second job of the same inputs that waits on the first's computations;
   the first is cancelled at a tenth, so the second's items are handed off to be computed anew, while faults
   are injected into those handoffs half-way. The second job must still come back whole.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import statistics
import textwrap
import time
from typing import Any

import requests

from batchery.settings import Settings
from benchmarks.stack import Child, Stack
from benchmarks.watch import Outcome, submit, watched_job

log = logging.getLogger("benchmarks")

STEADY = "echo-bench-steady"
FAULTY = "echo-bench-faulty"
#: The end of the worker's Celery log line for a chunk it took off the queue.
RECEIVED = "] received"


@dataclasses.dataclass(frozen=True)
class CostCurve:
    """What a batch of the synthetic model costs: a fixed part (launch, transfer) and a part per item."""

    batch_latency_ms: float
    item_latency_ms: float
    max_batch_size: int

    @property
    def full_batch_ms(self) -> float:
        return self.batch_latency_ms + self.item_latency_ms * self.max_batch_size


def models_toml(curve: CostCurve, fault_rate: float) -> str:
    """The two synthetic models: the same cost curve, faults injected into one of them only."""
    entries = []
    cost = f"{curve.batch_latency_ms:g} ms a batch + {curve.item_latency_ms:g} ms an item"
    for name, faults in ((STEADY, ""), (FAULTY, f"faults = {{transient_rate = {fault_rate}}}\n")):
        what = "no faults" if not faults else f"a transient fault in {fault_rate:.0%} of its batches"
        entries.append(
            textwrap.dedent(
                f"""\
                [models.{name}]
                runtime = "echo"
                input = "json"
                max_batch_size = {curve.max_batch_size}
                max_wait_ms = 2
                description = "synthetic: the chaos benchmark's echo, {cost}, {what}"
                [models.{name}.options]
                batch_latency_ms = {curve.batch_latency_ms}
                item_latency_ms = {curve.item_latency_ms}
                """
            )
            + faults
        )
    return "\n".join(entries)


class Inputs:
    """Integers never submitted before in this run: no job can be answered by another job's outputs."""

    def __init__(self) -> None:
        self.next = 0

    def fresh(self, count: int) -> list[int]:
        start, self.next = self.next, self.next + count
        return list(range(start, start + count))


def fault_pairs(stack: Stack, worker: Child, items: int, repeat: int, inputs: Inputs) -> dict[str, Any]:
    """``repeat`` pairs of jobs, steady model against faulty model, with the injected faults counted."""
    pairs = []
    for i in range(repeat):
        order = (STEADY, FAULTY) if i % 2 == 0 else (FAULTY, STEADY)
        runs: dict[str, Outcome] = {}
        for model in order:
            mark = _log_size(worker)
            runs[model] = outcome = watched_job(stack.api_url, model, inputs.fresh(items))
            lines = _new_log_lines(worker, mark)
            outcome.details["injected_transient"] = _count(lines, f"injected transient fault in model {model}")
            outcome.details["bisections"] = _count(lines, "bisecting")
            log.info("%s: %d items in %.2fs %s", model, items, outcome.seconds, outcome.details)
        steady, faulty = runs[STEADY], runs[FAULTY]
        ratio = round(faulty.items_per_s / steady.items_per_s, 4)
        faults = faulty.details["injected_transient"]
        per_fault = round((faulty.seconds - steady.seconds) / faults, 4) if faults else None
        pairs.append({"steady": steady.as_dict(), "faulty": faulty.as_dict(), "ratio": ratio, "s_per_fault": per_fault})
    return {
        **_spread("ratio", [p["ratio"] for p in pairs]),
        "dead_letters": _dead_letters(stack),
        "all_exactly_once": all(p[k]["exactly_once"] for p in pairs for k in ("steady", "faulty")),
        "injected_transient": sum(p["faulty"]["injected_transient"] for p in pairs),
        "pairs": pairs,
    }


def kill_pairs(
    stack: Stack, settings: Settings, items: int, repeat: int, kill_at: float, inputs: Inputs
) -> dict[str, Any]:
    """``repeat`` pairs: a job with two workers undisturbed, then one during which a worker is SIGKILLed."""
    pairs = []
    for i in range(repeat):
        victim = stack.start_worker(f"chaos-victim-{i + 1}", [STEADY], settings)
        try:
            undisturbed = watched_job(stack.api_url, STEADY, inputs.fresh(items))
            mark = _log_size(victim)
            killer = Killer(victim, kill_at * items)
            killed = watched_job(stack.api_url, STEADY, inputs.fresh(items), on_progress=killer)
        finally:
            stack.stop(victim.name)
        if killer.at_s is None:
            raise RuntimeError(f"the job finished before {kill_at:.0%} of it was seen done; make it bigger")
        killed.details.update(
            killed_at_s=round(killer.at_s, 3),
            done_when_killed=killer.done,
            victim_chunks_received=_count(_new_log_lines(victim, mark), RECEIVED),
        )
        log.info("undisturbed %.2fs, killed %.2fs %s", undisturbed.seconds, killed.seconds, killed.details)
        pairs.append(
            {
                "undisturbed": undisturbed.as_dict(),
                "killed": killed.as_dict(),
                "extra_s": round(killed.seconds - undisturbed.seconds, 4),
                "ratio": round(undisturbed.seconds / killed.seconds, 4),
            }
        )
    return {
        **_spread("ratio", [p["ratio"] for p in pairs]),
        **_spread("extra_s", [p["extra_s"] for p in pairs]),
        "all_exactly_once": all(p[k]["exactly_once"] for p in pairs for k in ("undisturbed", "killed")),
        "pairs": pairs,
    }


def shared_runs(stack: Stack, workers: list[Child], items: int, repeat: int, cancel_at: float, inputs: Inputs) -> dict[str, Any]:
    """``repeat`` times: an owner job and a waiter job of the same inputs; the owner is cancelled at
    ``cancel_at``, and the waiter must come back whole through handoffs that fail half-way at random."""
    runs = []
    for _ in range(repeat):
        marks = [_log_size(w) for w in workers]
        shared = inputs.fresh(items)
        http = requests.Session()
        owner = submit(http, stack.api_url, STEADY, shared, cache=True)
        waiter = submit(http, stack.api_url, STEADY, shared, cache=True)
        canceller = Canceller(http, owner, cancel_at * items)
        outcome = watched_job(stack.api_url, STEADY, shared, job=waiter, on_progress=canceller)
        lines = [line for w, mark in zip(workers, marks) for line in _new_log_lines(w, mark)]
        outcome.details.update(
            cancelled_owner_at=canceller.done,
            handoff_faults=_count(lines, "injected handoff fault"),
            resent=_count(lines, "their shared computation ended elsewhere"),
        )
        log.info("shared: %d items in %.2fs %s", items, outcome.seconds, outcome.details)
        runs.append(outcome.as_dict())
    return {
        "all_exactly_once": all(r["exactly_once"] for r in runs),
        "handoff_faults": sum(r["handoff_faults"] for r in runs),
        "runs": runs,
    }


class Canceller:
    """Cancels the owner job once ``threshold`` of its items are done, polled alongside the waiter."""

    def __init__(self, http: requests.Session, owner: dict[str, Any], threshold: float) -> None:
        self.http = http
        self.owner = owner
        self.threshold = threshold
        self.done: int | None = None

    def __call__(self, counts: dict[str, int], waited_s: float) -> None:
        if self.done is not None:
            return
        doc = self.http.get(self.owner["links"]["self"], timeout=10).json()
        if doc["counts"]["succeeded"] >= self.threshold:
            self.http.delete(self.owner["links"]["self"], timeout=10)
            self.done = doc["counts"]["succeeded"]


class Killer:
    """The progress callback that SIGKILLs the victim's process group once ``threshold`` items are done:
    no warm shutdown, no chunk handed back, as when a machine dies."""

    def __init__(self, victim: Child, threshold: float) -> None:
        self.victim = victim
        self.threshold = threshold
        self.at_s: float | None = None
        self.done = 0

    def __call__(self, counts: dict[str, int], waited_s: float) -> None:
        if self.at_s is not None or counts["succeeded"] < self.threshold:
            return
        os.killpg(self.victim.process.pid, signal.SIGKILL)
        self.at_s, self.done = waited_s, counts["succeeded"]
        log.info("killed %s at %.2fs with %d items done", self.victim.name, waited_s, self.done)


def warm_up(stack: Stack, models: tuple[str, ...], inputs: Inputs) -> None:
    """A small job per model first: connections, gunicorn's workers and the batchers' threads are warm."""
    for model in models:
        outcome = watched_job(stack.api_url, model, inputs.fresh(256))
        if not outcome.exactly_once:
            raise RuntimeError(f"the warm-up job on {model} did not come back whole: {outcome.as_dict()}")


def _spread(name: str, values: list[float]) -> dict[str, Any]:
    """The median under ``name`` and the range under ``name_range``: how far the pairs agree."""
    return {name: round(statistics.median(values), 4), f"{name}_range": [min(values), max(values)]}


def _dead_letters(stack: Stack) -> int:
    """Items that exhausted their retries, on the whole (private) stack: 0 unless a batch ran out of attempts."""
    response = requests.get(f"{stack.api_url}/v1/dead-letters", params={"limit": 1}, timeout=10)
    response.raise_for_status()
    return int(response.json()["total"])


def _log_size(child: Child) -> int:
    return child.log_path.stat().st_size


def _new_log_lines(child: Child, offset: int) -> list[str]:
    """What the child logged since ``offset``; a moment first, for lines still in its buffers."""
    time.sleep(0.1)
    with child.log_path.open("rb") as log_file:
        log_file.seek(offset)
        return log_file.read().decode(errors="replace").splitlines()


def _count(lines: list[str], needle: str) -> int:
    return sum(needle in line for line in lines)
