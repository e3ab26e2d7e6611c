"""The issue's targets, each checked against the run's figures, and the printed table.

A target that only a GPU can meet is reported as not applicable (``passed: null``) on a CPU run, with its
figure still shown: the CPU run proves the machinery, not the speed.
"""

from __future__ import annotations

from typing import Any

from benchmarks import report

THROUGHPUT = 50_000
RATIO = 300
PREDICT_P99_MS = 20.0


def _gauge(summary: dict[str, Any] | None, *words: str) -> float | None:
    """The largest value of a ``batchery_gpu*`` sample whose name holds every word."""
    largest = (summary or {}).get("max_by_sample", {})
    found = [value for name, value in largest.items() if all(w in name for w in words)]
    return max(found) if found else None


def _ratio(results: dict[str, Any]) -> float | None:
    plain = results.get("plain", {})
    load = results.get("load", {})
    if not plain.get("items_per_s") or not load.get("items_per_s"):
        return None
    return load["items_per_s"] / plain["items_per_s"]


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    gpu = results["device_kind"] == "cuda"

    def target(value: Any, wanted: str, passed: bool | None, gpu_only: bool = True) -> dict[str, Any]:
        applies = gpu or not gpu_only
        return {"value": value, "target": wanted, "passed": passed if applies else None}

    load = results.get("load", {"items_per_s": 0.0})
    ratio = _ratio(results)
    predict = results.get("predict", {})
    agreement = results.get("agreement", {})
    warm = results.get("after_warmup", {})
    nvml_name = (warm.get("nvml") or {}).get("name")
    gauges_warm = warm.get("metrics_gauges")
    gauges_load = results.get("during_load", {}).get("metrics_gauges")
    names = (gauges_warm or {}).get("device_names", [])
    memory = _gauge(gauges_warm, "memory", "used")
    utilization = _gauge(gauges_load, "util")
    worker = results.get("worker", {})
    reported = sorted({str(r.get("cuda_visible_devices")) for r in worker.get("reports", [])})
    oom = results.get("oom", {})
    cosine = agreement.get("vs_fp32_original_weights", {}).get("cosine_min")
    return {
        "throughput": target(load["items_per_s"], f">= {THROUGHPUT:,} items/s", load["items_per_s"] >= THROUGHPUT),
        "ratio_vs_plain_celery": target(
            None if ratio is None else round(ratio, 1), f">= {RATIO}x", ratio is not None and ratio >= RATIO
        ),
        "predict_p99_ms": target(
            predict.get("p99_ms"), f"< {PREDICT_P99_MS:g} ms", predict.get("p99_ms", 1e9) < PREDICT_P99_MS
        ),
        "cosine_min_vs_fp32": target(cosine, ">= 0.999, every item", bool(agreement.get("passed")), gpu_only=False),
        "metrics_device_name": target(names, f"names the device ({nvml_name})", bool(nvml_name) and nvml_name in names),
        "metrics_memory_used_after_warmup": target(memory, "> 0", bool(memory and memory > 0)),
        "metrics_utilization_during_load": target(utilization, "> 0", bool(utilization and utilization > 0)),
        "worker_cuda_visible_devices": target(
            reported, f"reports {worker.get('pinned_to')!r}", reported == [str(worker.get("pinned_to"))]
        ),
        "oom_split_and_complete": target(
            oom.get("oom_splits", oom.get("skipped")), "a real OOM split, every item correct", bool(oom.get("passed"))
        ),
    }


def rows(results: dict[str, Any]) -> list[report.Row]:
    load = results.get("load", {})
    plain = results.get("plain", {})
    where = results.get("settings", {}).get("worker_device", "?")
    table = []
    if load.get("items"):
        table.append(
            report.Row(
                f"minilm: batchery, HTTP submit -> every result fetched ({where})",
                load["items"], load["seconds"], _ratio(results), f">= {THROUGHPUT:,}/s and >= {RATIO}x plain",
            )
        )
    host = results.get("host", {})
    if host.get("items"):
        table.append(
            report.Row(
                f"synthetic-embed: the same path, a model that costs nothing ({where})",
                host["items"], host["seconds"], None, "host path's ceiling",
            )
        )
    if plain.get("items"):
        table.append(
            report.Row(
                f"minilm: plain Celery, one task per item, {plain['pool']} x{plain['concurrency']} ({where})",
                plain["items"], plain["seconds"], None, "baseline",
            )
        )
    return table


def text(results: dict[str, Any], checked: dict[str, dict[str, Any]]) -> str:
    table = rows(results)
    lines = [report.table(table) if table else "(no load was timed)", ""]
    width = max(len(name) for name in checked)
    for name, t in checked.items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        lines.append(f"{verdict}  {name.ljust(width)}  {t['value']!s:<40}  target {t['target']}")
    predict = results.get("predict", {})
    if "p50_ms" in predict:
        lines.append(f"predict: p50 {predict['p50_ms']} ms, p99 {predict['p99_ms']} ms over {predict['requests']} requests")
    during = results.get("during_load", {})
    if during.get("nvml_readings"):
        lines.append(
            f"NVML during the load: utilisation mean {during['nvml_utilization_pct_mean']}%, "
            f"max {during['nvml_utilization_pct_max']}%, memory used at most {during['nvml_memory_used_mb_max']} MB"
        )
    return "\n".join(lines)
