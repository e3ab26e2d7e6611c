"""``python -m benchmarks.threads``: why each process of a CPU pool gets its share of the cores, not all of them.

K worker processes on C cores run the minilm model at once, each on its own part of the corpus, loaded as a
pool worker loads it (``Settings.worker_threads``, read by the ONNX runtime). Compared, in one run: one process
with C threads (the baseline), K = C processes with C/K threads each (what `batchery worker` gives them), and
K = C processes with C threads each (what each would take if nobody told it about the others).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from batchery.cli.pool import threads_per_process
from batchery.models.registry import BUILTINS
from batchery.runtimes import load_runtime
from batchery.settings import Settings
from batchery.workers.devices import cpu_cores
from benchmarks import corpus
from benchmarks.pipeline import DEFAULT_DATA_DIR
from benchmarks.report import Row, machine, table, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"


def _worker(data_dir: str, threads: int, texts: list[str], barrier, results) -> None:  # noqa: ANN001
    spec = BUILTINS["minilm"]
    runtime = load_runtime(spec, "cpu", Settings(data_dir=data_dir, worker_threads=threads))
    runtime.warm_up()
    barrier.wait()
    started = time.monotonic()
    for start in range(0, len(texts), spec.max_batch_size):
        runtime.run(runtime.prepare(texts[start : start + spec.max_batch_size]))
    results.put((started, time.monotonic()))


def run_pool(data_dir: str, processes: int, threads: int, texts: list[str]) -> float:
    """Seconds from the common start until the last of ``processes`` has embedded its share of ``texts``."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shares = [texts[k::processes] for k in range(processes)]
    children = [context.Process(target=_worker, args=(data_dir, threads, s, barrier, results)) for s in shares]
    for child in children:
        child.start()
    spans = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1536)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, alternated; the median is kept")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where the minilm ONNX export is cached")
    args = parser.parse_args(argv)
    cores = cpu_cores()
    texts = corpus.texts(args.texts)
    share = threads_per_process(cores, cores)
    variants = {
        f"1 process × {cores} threads": (1, cores),
        f"{cores} processes × {share} thread(s): the pool's share": (cores, share),
        f"{cores} processes × {cores} threads: oversubscribed": (cores, cores),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, (processes, threads) in variants.items():
            seconds[name].append(run_pool(args.data_dir, processes, threads, texts))
    baseline = statistics.median(next(iter(seconds.values())))
    rows = []
    for name, runs in seconds.items():
        median = statistics.median(runs)
        rows.append(Row(name, len(texts), median, ratio=baseline / median))
    print(table(rows))
    write_json(RESULTS, {"machine": machine(), "rows": [r.as_dict() for r in rows], "runs_s": seconds})
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
