"""``python -m benchmarks.int8 [--quick] [--out DIR|FILE.json]``: MiniLM in int8 against fp32, on the CPU.

Three runtimes embed the same texts through batchery's own runtime classes: ONNX Runtime on the fp32 export,
ONNX Runtime on its int8 copy (``options.quantize = "int8"``, made and checked as a worker makes it), and
PyTorch in fp32. Texts are tokenised and padded beforehand, in batches of like length as the batcher's length
buckets make them, so that only the model runs (with pooling and normalisation) inside the timed loop. Every
runtime runs the same number of threads, warms up first, then the three take turns run by run, the order
rotating, so that drift on a shared machine hits all of them alike. Reported: the median run of each, the
ratio of items/s to ONNX fp32 (the median of each run's ratio), and how closely the vectors agree (cosine).
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

import numpy as np

from batchery.models.registry import ModelSpec, load_registry
from batchery.runtimes import Runtime, load_runtime, quantize
from batchery.settings import Settings
from benchmarks import corpus, report
from benchmarks.cpu import machine_cpu_s, self_cpu_s
from benchmarks.stack import run_interruptibly

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "int8.json"
DEFAULT_DATA_DIR = HERE / ".cache"
BASELINE = "onnx fp32"
NAMES = (BASELINE, "onnx int8", "torch fp32")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report or folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="256 texts, one run of each runtime")
    parser.add_argument("--items", type=int, help="texts per run (default 1024, --quick 256)")
    parser.add_argument("--repeat", type=int, help="runs of each runtime; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    parser.add_argument("--threads", type=int, help="threads of every runtime (default: this process's cores)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="BATCHERY_DATA_DIR (export cache)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        args.out = args.out / DEFAULT_OUT.name
    args.items = args.items or (256 if args.quick else 1024)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    return args


def specs(threads: int) -> dict[str, ModelSpec]:
    """The built-in MiniLM three ways, every one on ``threads`` threads."""
    base = load_registry().get("minilm")
    options = {**base.options, "threads": threads}
    return {
        BASELINE: dataclasses.replace(base, options=options),
        "onnx int8": dataclasses.replace(base, options={**options, "quantize": "int8"}),
        "torch fp32": dataclasses.replace(base, runtime="torch", options=options),
    }


def batches(runtime: Runtime, texts: Sequence[str], size: int) -> tuple[list[Any], list[int]]:
    """Padded batches of texts of like length, made once per runtime outside the timed loop."""
    tokens = runtime.preprocess(texts)
    order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
    return [runtime.prepare([tokens[i] for i in order[s : s + size]]) for s in range(0, len(order), size)], order


def measure(runtimes: dict[str, Runtime], prepared: dict[str, list[Any]], repeat: int) -> dict[str, list[dict]]:
    """``repeat`` passes over the batches; within a pass the three runtimes take turns batch by batch, the order
    rotating, so that a burst of load from other programs lands on all three alike. Per pass and runtime: the
    wall and CPU seconds of its batches; and, per pass, how many cores other programs kept busy."""
    passes: dict[str, list[dict]] = {name: [] for name in NAMES}
    for number in range(repeat):
        spent = {name: {"seconds": 0.0, "cpu_s": 0.0} for name in NAMES}
        started, machine_before, self_before = time.perf_counter(), machine_cpu_s(), self_cpu_s()
        for index in range(len(prepared[BASELINE])):
            turn = (number + index) % len(NAMES)
            for name in NAMES[turn:] + NAMES[:turn]:
                wall, cpu = time.perf_counter(), self_cpu_s()
                runtimes[name].run(prepared[name][index])
                spent[name]["seconds"] += time.perf_counter() - wall
                spent[name]["cpu_s"] += self_cpu_s() - cpu
        elapsed = time.perf_counter() - started
        others = max((machine_cpu_s() - machine_before) - (self_cpu_s() - self_before), 0.0) / elapsed
        for name in NAMES:
            passes[name].append({**spent[name], "others_cores_busy": others})
        rates = ", ".join(f"{name} {spent[name]['seconds']:.2f}s" for name in NAMES)
        print(f"pass {number + 1}: {rates}; other programs {others:.2f} cores", file=sys.stderr)
    return passes


def outputs_of(runtime: Runtime, prepared: list[Any], order: list[int]) -> np.ndarray:
    """Every text's vector, in the corpus's order: one warm-up pass that also gives what to compare."""
    return in_order([vector for batch in prepared for vector in runtime.run(batch)], order)


def in_order(outputs: list[Any], order: list[int]) -> np.ndarray:
    vectors = np.empty((len(order), len(outputs[0])), dtype=np.float64)
    vectors[order] = np.stack(outputs)
    return vectors


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cosines = quantize.cosines(a, b)
    return {"mean_cosine": round(float(np.mean(cosines)), 5), "min_cosine": round(float(np.min(cosines)), 5)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    texts = corpus.texts(args.items)
    settings = Settings(data_dir=str(args.data_dir), worker_threads=args.threads)
    runtimes = {name: load_runtime(spec, "cpu", settings) for name, spec in specs(args.threads).items()}
    made = {name: batches(runtime, texts, args.batch_size) for name, runtime in runtimes.items()}
    prepared = {name: batched for name, (batched, _) in made.items()}
    vectors = {name: outputs_of(runtimes[name], *made[name]) for name in NAMES}
    runs = measure(runtimes, prepared, args.repeat)
    results = {name: summary(runs[name], len(texts)) for name in NAMES}
    ratios = {
        name: round(statistics.median(b["seconds"] / r["seconds"] for b, r in zip(runs[BASELINE], runs[name])), 3)
        for name in NAMES
    }
    cpu_ratios = {
        name: round(statistics.median(b["cpu_s"] / r["cpu_s"] for b, r in zip(runs[BASELINE], runs[name])), 3)
        for name in NAMES
    }
    return {
        "command": " ".join(["python -m benchmarks.int8", *sys.argv[1:]]),
        "quick": args.quick,
        "corpus": {"kind": "benchmarks.corpus.texts", "texts": len(texts), "batch_size": args.batch_size},
        "threads": args.threads,
        "results": results,
        "ratios_to_onnx_fp32": ratios,
        "cpu_ratios_to_onnx_fp32": cpu_ratios,
        "agreement": {
            "onnx int8 vs onnx fp32": agreement(vectors["onnx int8"], vectors[BASELINE]),
            "torch fp32 vs onnx fp32": agreement(vectors["torch fp32"], vectors[BASELINE]),
            "onnx int8 vs torch fp32": agreement(vectors["onnx int8"], vectors["torch fp32"]),
        },
        "int8_copy": copy_figures(runtimes["onnx int8"], settings),
        "machine": report.machine(),
        "total_s": round(time.perf_counter() - started, 1),
    }


def summary(runs: list[dict[str, float]], items: int) -> dict[str, Any]:
    middle = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {
        "items": items,
        "seconds": round(middle["seconds"], 3),
        "items_per_s": round(items / middle["seconds"], 1),
        "cpu_s": round(middle["cpu_s"], 2),
        "others_cores_busy": round(middle["others_cores_busy"], 2),
        "runs_s": [round(r["seconds"], 3) for r in runs],
    }


def copy_figures(runtime: Runtime, settings: Settings) -> dict[str, Any]:
    """The int8 copy's size against the fp32 file's, and its agreement on the reference texts of the check."""
    from batchery.runtimes.onnx import resolve_files

    fp32, _ = resolve_files(runtime.spec, settings)
    copy = quantize.copy_path(settings, fp32, encoder=runtime.encoder)
    checked = quantize.compare(runtime.spec, fp32, copy, runtime.encoder)
    return {
        "fp32_mb": round(fp32.stat().st_size / 2**20, 1),
        "int8_mb": round(copy.stat().st_size / 2**20, 1),
        "reference_texts": len(checked.cosines),
        "reference_mean_cosine": round(checked.mean, 5),
        "reference_min_cosine": round(checked.min, 5),
    }


def table(document: dict[str, Any]) -> str:
    results, ratios, cpu = document["results"], document["ratios_to_onnx_fp32"], document["cpu_ratios_to_onnx_fp32"]
    agree = document["agreement"]
    cosine = {
        BASELINE: "",
        "onnx int8": f"{agree['onnx int8 vs onnx fp32']['mean_cosine']:.4f}",
        "torch fp32": f"{agree['torch fp32 vs onnx fp32']['mean_cosine']:.4f}",
    }
    header = ("MiniLM on the CPU", "items", "seconds", "items/s", "items/s ratio", "CPU s ratio", "mean cosine")
    lines = [
        (
            name,
            f"{results[name]['items']:,}",
            f"{results[name]['seconds']:.2f}",
            f"{results[name]['items_per_s']:,.1f}",
            f"{ratios[name]:.2f}×",
            f"{cpu[name]:.2f}×",
            cosine[name],
        )
        for name in NAMES
    ]
    text = report.grid(header, lines, right={1, 2, 3, 4, 5, 6})
    return text + "\n(ratios and cosine against onnx fp32; CPU s ratio: its CPU seconds over this runtime's)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = run_interruptibly(run, args)
    if document is None:
        return 130
    report.write_json(args.out, document)
    copy = document["int8_copy"]
    print()
    print(table(document))
    print(
        f"\nint8 copy: {copy['int8_mb']} MB (fp32 {copy['fp32_mb']} MB); on the {copy['reference_texts']} reference "
        f"texts: mean cosine {copy['reference_mean_cosine']:.4f}, min {copy['reference_min_cosine']:.4f}"
    )
    busy = max(r["others_cores_busy"] for r in document["results"].values())
    print(
        f"threads per runtime: {document['threads']}; other programs on this machine kept {busy:.2f} cores busy "
        f"(the median pass; 0 is a quiet box)"
    )
    print(f"{document['total_s']:.0f}s in all; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
