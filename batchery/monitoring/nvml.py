"""GPU gauges per device through NVML (``pynvml``, from the nvidia-ml-py package), read at scrape time.

On a machine without an NVIDIA driver NVML does not load; the collector then reports nothing at all (no
families, no error), so one image and one dashboard serve CPU and GPU hosts alike. A reading a device does
not support (power on some boards, say) is left out for that device only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

import pynvml
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
LABELS = ["gpu", "name", "uuid"]


def _families() -> dict[str, GaugeMetricFamily]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=LABELS)

    return {
        "utilization": gauge(
            "batchery_gpu_utilization_ratio", "Fraction of the last sample period the GPU was busy (0-1)."
        ),
        "memory_used": gauge("batchery_gpu_memory_used_bytes", "GPU memory in use."),
        "memory_total": gauge("batchery_gpu_memory_total_bytes", "GPU memory on the device."),
        "temperature": gauge("batchery_gpu_temperature_celsius", "GPU core temperature."),
        "power": gauge("batchery_gpu_power_watts", "GPU power draw."),
    }


#: Each reading: the family it feeds and how to take it from a device handle, in base units.
READINGS: dict[str, Callable[[Any], float]] = {
    "utilization": lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100,
    "memory_used": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).used,
    "memory_total": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).total,
    "temperature": lambda h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
    "power": lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000,
}


class GpuCollector:
    """NVML is initialised on the first scrape and kept; a failed initialisation is not retried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: bool | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(_families().values())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if not self._init():
            return []
        try:
            families = _families()
            for index in range(pynvml.nvmlDeviceGetCount()):
                self._read_device(index, families)
        except pynvml.NVMLError as exc:
            log.warning("NVML: %s", exc)
            return []
        return [f for f in families.values() if f.samples]

    def _init(self) -> bool:
        with self._lock:
            if self._ready is None:
                try:
                    pynvml.nvmlInit()
                    self._ready = True
                except pynvml.NVMLError as exc:
                    log.info("no GPU metrics: NVML is not available here (%s)", exc)
                    self._ready = False
            return self._ready

    def _read_device(self, index: int, families: dict[str, GaugeMetricFamily]) -> None:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        labels = [str(index), _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle))]
        for key, read in READINGS.items():
            try:
                families[key].add_metric(labels, float(read(handle)))
            except pynvml.NVMLError as exc:
                log.debug("NVML: GPU %d has no %s reading: %s", index, key, exc)


def _text(value: str | bytes) -> str:
    """Older NVML bindings answer bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value
