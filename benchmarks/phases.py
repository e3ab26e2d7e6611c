"""The measurements, one function per phase: start what the phase needs, warm it, time it, stop it.

Each phase starts its own worker and stops it before the next, so that an idle process of one phase does
not take a core from the next; each measurement is repeated, the median run reported, and the CPU seconds
of every process group (and of the rest of the machine) counted over the runs.

Every side of a comparison is warmed with inputs of its own (never the timed ones) and timed on the same
items as the other side. batchery jobs go with the result cache off, and a run that the cache answered
anyway is an error: it would time Redis lookups, not the pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from batchery.models.registry import load_registry
from benchmarks import corpus, measure
from benchmarks.cpu import CpuMeter, python_thread_names, thread_breakdown, thread_cpu_s
from benchmarks.stack import Child, Stack

log = logging.getLogger("benchmarks")


#: The warm-up inputs come from another seed than the timed ones, so that nothing a warm-up computed can be
#: reused by a timed run, whatever cache sits in the way.
WARM_SEED = corpus.SEED + 1
#: Echo items sent to each side before its timed runs: four chunks of echo's 1,024 items (so that every process
#: of a pool of up to four has run one), sixteen 256-item Celery tasks, and enough single-item tasks to reach
#: every prefork child.
WARM_ECHO_ITEMS = 4096
WARM_MINILM_ITEMS = 256


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Items per run for each comparison (both sides get the same count), and runs per measurement."""

    echo: int
    minilm: int
    repeat: int
    #: Runs of each side of echo against plain Celery's lists: they take a fraction of a second each, and
    #: their ratio, the one that counts, swings most from run to run.
    echo_repeat: int = 7

    @classmethod
    def of(cls, quick: bool, repeat: int | None) -> "Sizes":
        sizes = cls(2_000, 1_000, 1, 1) if quick else cls(20_000, 4_000, 3, 7)
        return dataclasses.replace(sizes, repeat=repeat or sizes.repeat, echo_repeat=repeat or sizes.echo_repeat)


def warm_inputs(count: int) -> list[str]:
    return corpus.texts(count, seed=WARM_SEED)


def median_run(runs: list[measure.Run]) -> measure.Run:
    """The run with the median time (the lower middle one of an even count): robust to one noisy run."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def summary(runs: list[measure.Run], cpu: dict[str, float]) -> dict[str, Any]:
    """Figures of one measurement for the JSON: the median, every run, and CPU seconds per process group."""
    best = median_run(runs)
    wall = sum(r.seconds for r in runs)
    return {
        "items": best.items,
        "seconds": round(best.seconds, 4),
        "items_per_s": round(best.items_per_s, 1),
        "runs": [{"seconds": round(r.seconds, 4), "items_per_s": round(r.items_per_s, 1), **r.details} for r in runs],
        "cpu_s": cpu,
        "cores_busy": {name: round(seconds / wall, 2) for name, seconds in cpu.items()} if wall > 0 else {},
    }


def computed(run: measure.Run) -> measure.Run:
    """The run, once its job's counts show that no item came from the result cache."""
    cached = run.details["counts"]["cached"]
    if cached:
        raise RuntimeError(f"job {run.details['job_id']}: {cached} items came from the result cache")
    return run


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a comparison: its name, the process groups whose CPU it uses, and one timed run of it."""

    name: str
    groups: dict[str, Child | int]
    once: Callable[[], measure.Run]


def alternated(sides: Sequence[Side], repeat: int) -> dict[str, tuple[list[measure.Run], dict[str, float]]]:
    """``repeat`` runs of each side, taken in turn (a, b, a, b, ...) so that drift in the machine hits every
    side alike; each side's runs, and the CPU seconds of its process groups over its own runs."""
    runs: dict[str, list[measure.Run]] = {side.name: [] for side in sides}
    cpu: dict[str, dict[str, float]] = {side.name: {} for side in sides}
    for _ in range(repeat):
        for side in sides:
            meter = CpuMeter(_pids(side.groups)).start()
            runs[side.name].append(side.once())
            cpu[side.name] = _add(cpu[side.name], meter.stop())
    return {name: (runs[name], cpu[name]) for name in runs}


@contextlib.contextmanager
def echo_side(stack: Stack, api: Child, sizes: Sizes, processes: int) -> Iterator[Side]:
    """batchery's echo on a CPU pool of ``processes`` worker processes, as ``batchery worker`` runs one, warmed."""
    inputs = corpus.texts(sizes.echo)
    worker = stack.start_pool("bench-echo", ["echo"], processes)
    try:
        # warm: connections, gunicorn workers, every pool process's batcher
        computed(measure.pipeline(stack.api_url, "echo", warm_inputs(WARM_ECHO_ITEMS))[0])

        def once() -> measure.Run:
            run, outputs = measure.pipeline(stack.api_url, "echo", inputs)
            computed(run)
            if outputs != inputs:
                raise RuntimeError("echo returned outputs that differ from its inputs")
            log.info(
                "echo pipeline: %d items in %.2fs (%.0f/s) %s", run.items, run.seconds, run.items_per_s, run.details
            )
            return run

        yield Side("echo", {"api": api, "worker": worker, "redis": stack.redis_pid}, once)
    finally:
        stack.stop(worker.name)


@contextlib.contextmanager
def plain_side(stack: Stack, pool: str, concurrency: int, sizes: Sizes, task_items: int) -> Iterator[Side]:
    """Plain Celery echo on the same items as batchery's echo, ``task_items`` items to a task, warmed."""
    inputs = corpus.texts(sizes.echo)
    redis_url = stack.settings.effective_redis_url
    worker = stack.start_plain_worker(pool, concurrency)
    try:
        measure.plain_celery(redis_url, warm_inputs(WARM_ECHO_ITEMS), task_items)  # every pool child, once

        def once() -> measure.Run:
            run, outputs = measure.plain_celery(redis_url, inputs, task_items)
            if outputs != inputs:
                raise RuntimeError("the plain Celery echo returned outputs that differ from its inputs")
            log.info(
                "plain celery %s, %d items a task: %d items in %.2fs (%.0f/s)",
                pool, task_items, run.items, run.seconds, run.items_per_s,
            )
            return run

        yield Side(f"plain-{pool}-{task_items}", {"worker": worker, "redis": stack.redis_pid}, once)
    finally:
        stack.stop(worker.name)


def bench_echo(stack: Stack, api: Child, sizes: Sizes, processes: int = 1) -> dict[str, Any]:
    """batchery's echo alone."""
    with echo_side(stack, api, sizes, processes) as echo:
        runs, cpu = alternated([echo], sizes.repeat)[echo.name]
    return {"processes": processes, **summary(runs, cpu)}


def bench_plain(stack: Stack, pool: str, concurrency: int, sizes: Sizes, task_items: int = 1) -> dict[str, Any]:
    """Plain Celery's echo alone."""
    with plain_side(stack, pool, concurrency, sizes, task_items) as plain:
        runs, cpu = alternated([plain], sizes.repeat)[plain.name]
    return {"pool": pool, "concurrency": concurrency, "task_items": task_items, **summary(runs, cpu)}


def bench_echo_against_plain(
    stack: Stack, api: Child, sizes: Sizes, processes: int, pool: str, concurrency: int, task_items: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """batchery's echo and plain Celery's, both running at once and idle in turn, their runs alternated: the
    ratio of two sides measured seconds apart on this shared machine moved by as much as a third between
    runs of one command, and alternating puts both under the same drift. Each side's CPU is counted over its
    own runs; the other side's idle processes show under ``others``."""
    with echo_side(stack, api, sizes, processes) as echo, plain_side(stack, pool, concurrency, sizes, task_items) as plain:
        measured = alternated([echo, plain], sizes.echo_repeat)
    (echo_runs, echo_cpu), (plain_runs, plain_cpu) = measured[echo.name], measured[plain.name]
    return (
        {"processes": processes, **summary(echo_runs, echo_cpu)},
        {"pool": pool, "concurrency": concurrency, "task_items": task_items, **summary(plain_runs, plain_cpu)},
    )


#: ``minilm`` as an int8 model of its own (see docs/int8.md), for :func:`bench_int8`.
MINILM_INT8 = "minilm-int8"
#: The least cosine similarity an int8 vector may have to fp32's (the check's own bound); below it the run is refused.
INT8_MIN_COSINE = 0.99


def minilm_models_file(stack: Stack, threads: int | None) -> Path:
    """The benchmark's models file: minilm's threads override (for the worker and raw ORT alike) and the int8 model."""
    threads_line = "" if threads is None else f"threads = {threads}\n"
    path = stack.scratch / "models.toml"
    path.write_text(
        f"[models.minilm.options]\n{threads_line}"
        f"[models.{MINILM_INT8}]\nruntime = \"onnx\"\nversion = \"l6-v2\"\ninput = \"text\"\n"
        f"max_batch_tokens = 4096\ndescription = \"all-MiniLM-L6-v2, int8 on the CPU\"\n"
        f"[models.{MINILM_INT8}.options]\nsource = \"minilm\"\nquantize = \"int8\"\nmax_length = 256\n"
        f"pooling = \"mean\"\nnormalize = true\ndimensions = 384\n{threads_line}"
    )
    return path


def bench_minilm(stack: Stack, api: Child, sizes: Sizes) -> dict[str, dict[str, Any]]:
    """Raw ORT on minilm's fp32 export and the pipeline serving ``minilm`` on one worker process of as many
    threads, alternated run by run so that drift in the machine hits both alike."""
    settings = stack.settings
    model = "minilm"
    spec = load_registry(settings.models_file).get(model)
    texts = corpus.texts(sizes.minilm)
    warm = warm_inputs(WARM_MINILM_ITEMS)
    started = time.perf_counter()
    worker = stack.start_worker(f"bench-{model}", [model], settings)  # exports on a cold cache
    worker_start_s = time.perf_counter() - started
    raw = measure.RawOnnx(spec, settings)
    try:
        computed(measure.pipeline(stack.api_url, model, warm)[0])
        raw.run(warm)
        raw_runs: list[measure.Run] = []
        pipe_runs: list[measure.Run] = []
        raw_cpu: dict[str, float] = {}
        pipe_cpu: dict[str, float] = {}
        groups = _pids({"api": api, "worker": worker, "redis": stack.redis_pid})
        thread_names = python_thread_names(worker.process.pid)
        threads_before = thread_cpu_s(worker.process.pid)
        for _ in range(sizes.repeat):
            meter = CpuMeter(groups).start()
            run, vectors = raw.run(texts)
            raw_cpu = _add(raw_cpu, meter.stop())
            raw_runs.append(run)
            meter = CpuMeter(groups).start()
            run, outputs = measure.pipeline(stack.api_url, model, texts)
            computed(run)
            pipe_cpu = _add(pipe_cpu, meter.stop())
            pipe_runs.append(run)
            _check_vectors(run, np.asarray(outputs, dtype=np.float32), vectors, int8=False)
            log.info("%s raw %.0f/s, pipeline %.0f/s", model, raw_runs[-1].items_per_s, pipe_runs[-1].items_per_s)
        # includes the raw runs, when the worker idles: what shows is where the pipeline's CPU went
        worker_threads = thread_breakdown(threads_before, thread_cpu_s(worker.process.pid), thread_names)
    finally:
        raw.close()
        stack.stop(worker.name)
    return {
        "raw": {"intra_op_threads": raw.threads, **summary(raw_runs, raw_cpu)},
        "pipeline": {
            "worker_start_s": round(worker_start_s, 2),
            **summary(pipe_runs, pipe_cpu),
            "worker_threads_cpu_s": worker_threads,
        },
    }


def bench_int8(stack: Stack, api: Child, sizes: Sizes, processes: int) -> dict[str, dict[str, Any]]:
    """``minilm`` (fp32) and ``minilm-int8`` end to end on one CPU pool of ``processes`` one-thread processes, as
    ``batchery worker`` runs one, every process serving both; their runs alternate, so that drift in the
    machine hits both alike.

    int8 is for the CPU, and a CPU pool is how a CPU machine serves it. Each int8 run's vectors are compared
    item by item with the fp32 run's (which the minilm phase holds to raw ORT's).
    """
    texts = corpus.texts(sizes.minilm)
    models = {"fp32": "minilm", "int8": MINILM_INT8}
    pool = stack.start_pool("bench-pool-minilm", list(models.values()), processes)
    try:
        for model in models.values():
            computed(measure.pipeline(stack.api_url, model, warm_inputs(WARM_MINILM_ITEMS))[0])
        runs: dict[str, list[measure.Run]] = {kind: [] for kind in models}
        cpu: dict[str, dict[str, float]] = {kind: {} for kind in models}
        for _ in range(sizes.repeat):
            vectors = {}
            for kind, model in models.items():
                meter = CpuMeter(_pids({"api": api, "worker": pool, "redis": stack.redis_pid})).start()
                run, outputs = measure.pipeline(stack.api_url, model, texts)
                cpu[kind] = _add(cpu[kind], meter.stop())
                runs[kind].append(computed(run))
                vectors[kind] = np.asarray(outputs, dtype=np.float32)
            _check_vectors(runs["int8"][-1], vectors["int8"], vectors["fp32"], int8=True)
            log.info("minilm on a pool of %d: fp32 %.0f/s, int8 %.0f/s", processes, *(r[-1].items_per_s for r in runs.values()))
    finally:
        stack.stop(pool.name)
    return {kind: {"processes": processes, **summary(runs[kind], cpu[kind])} for kind in models}


def _check_vectors(run: measure.Run, outputs: np.ndarray, vectors: np.ndarray, int8: bool) -> None:
    """fp32 must give the fp32 reference's vectors; int8 close ones (each item's cosine to fp32 is recorded, the
    least of them bounded)."""
    if not int8:
        difference = float(np.abs(outputs - vectors).max())
        run.details["max_abs_diff_vs_raw"] = difference
        if difference > 1e-3:
            raise RuntimeError(f"pipeline and raw ONNX Runtime embeddings differ by {difference:.2e}")
        return
    cosines = np.sum(outputs * vectors, axis=1) / (np.linalg.norm(outputs, axis=1) * np.linalg.norm(vectors, axis=1))
    run.details["cosine_vs_fp32"] = {"mean": round(float(cosines.mean()), 4), "min": round(float(cosines.min()), 4)}
    if cosines.min() < INT8_MIN_COSINE:
        raise RuntimeError(f"int8 and fp32 embeddings disagree: a cosine of {cosines.min():.4f}")


def _pids(groups: dict[str, Child | int]) -> dict[str, int]:
    return {name: g if isinstance(g, int) else g.process.pid for name, g in groups.items()}


def _add(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    return {k: round(total.get(k, 0.0) + more.get(k, 0.0), 3) for k in {**total, **more}}
