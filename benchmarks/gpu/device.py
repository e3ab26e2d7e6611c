"""What the benchmark knows of the device: NVML read directly, the ``batchery_gpu_*`` gauges, the worker's report.

The gauges are served by each worker's own exporter (``worker_metrics_port``); the API's ``/metrics`` is
scraped too, so that gauges show wherever they are served.

The benchmark process never initialises CUDA (no context, no memory taken on the GPU it measures): it finds
the GPU and reads it through NVML alone, and its own model work (the float32 reference) runs on the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests

log = logging.getLogger("benchmarks.gpu")
#: The families that the metrics endpoints serve from NVML.
GPU_FAMILY_PREFIX = "batchery_gpu"


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # no library, no driver, no device: the same answer, no GPU here
        log.info("NVML is not available (%s): no GPU here", exc)
        return None


def gpu_count() -> int:
    nvml = _nvml()
    return nvml.nvmlDeviceGetCount() if nvml else 0


def resolve(device: str) -> str:
    """``auto`` becomes ``cuda`` where NVML sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if gpu_count() > 0 else "cpu"
    if device == "cuda" and gpu_count() == 0:
        raise SystemExit("--device cuda, but NVML sees no GPU here")
    return device


def nvml_reading(index: int = 0) -> dict[str, Any] | None:
    """Name, memory and utilisation of the GPU with NVML index ``index``, or None without NVML."""
    nvml = _nvml()
    if nvml is None or nvml.nvmlDeviceGetCount() <= index:
        return None
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else name,
        "memory_used_mb": round(memory.used / 1e6, 1),
        "memory_total_mb": round(memory.total / 1e6, 1),
        "utilization_pct": rates.gpu,
    }


def scrape(urls: list[str]) -> list[dict[str, Any]]:
    """Every ``batchery_gpu*`` sample of some Prometheus endpoints: where from, name, labels, value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = []
    for url in urls:
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException as exc:
            log.warning("could not scrape %s: %s", url, exc)
            continue
        samples += [
            {"url": url, "name": sample.name, "labels": dict(sample.labels), "value": sample.value}
            for family in text_string_to_metric_families(text)
            if family.name.startswith(GPU_FAMILY_PREFIX)
            for sample in family.samples
        ]
    return samples


def summarize_gauges(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The device names the gauges carry in their labels, and the largest value of each family."""
    names = sorted({v for s in samples for k, v in s["labels"].items() if k == "name" and v})
    largest: dict[str, float] = {}
    for sample in samples:
        largest[sample["name"]] = max(largest.get(sample["name"], float("-inf")), sample["value"])
    served_by = sorted({s["url"] for s in samples})
    return {"device_names": names, "max_by_sample": largest, "samples": len(samples), "served_by": served_by}


class Sampler:
    """Reads NVML (5 times a second) and the metrics endpoints (once a second) in a thread while the load runs."""

    def __init__(self, metrics_urls: list[str], nvml_index: int | None) -> None:
        self.metrics_urls = metrics_urls
        self.nvml_index = nvml_index
        self.nvml: list[dict[str, Any]] = []
        self.gauges: list[list[dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        last_scrape = 0.0
        while not self._stop.wait(0.2):
            if self.nvml_index is not None and (reading := nvml_reading(self.nvml_index)):
                self.nvml.append(reading)
            if time.monotonic() - last_scrape >= 1.0:
                last_scrape = time.monotonic()
                self.gauges.append(scrape(self.metrics_urls))

    def summary(self) -> dict[str, Any]:
        rates = [r["utilization_pct"] for r in self.nvml]
        return {
            "nvml_readings": len(rates),
            "nvml_utilization_pct_mean": round(sum(rates) / len(rates), 1) if rates else None,
            "nvml_utilization_pct_max": max(rates) if rates else None,
            "nvml_memory_used_mb_max": max((r["memory_used_mb"] for r in self.nvml), default=None),
            "metrics_scrapes": len(self.gauges),
            "metrics_gauges": summarize_gauges([s for scrape_ in self.gauges for s in scrape_]),
        }


def workers_document(api_url: str) -> dict[str, Any]:
    """``GET /v1/workers``: the live workers as the API reports them."""
    response = requests.get(f"{api_url}/v1/workers", timeout=10)
    response.raise_for_status()
    return response.json()


def model_document(api_url: str, model: str) -> dict[str, Any]:
    response = requests.get(f"{api_url}/v1/models/{model}", timeout=10)
    response.raise_for_status()
    return response.json()
