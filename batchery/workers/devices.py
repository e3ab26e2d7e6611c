"""The GPUs of this machine, as NVML sees them, and the names a worker gives its device.

NVML is asked, never CUDA: the supervisor that starts one worker process per GPU must not initialise CUDA
itself, since every process it starts afterwards has to choose its GPU (``CUDA_VISIBLE_DEVICES``) before
its own first CUDA call. No NVML (no ``pynvml``, no driver, an NVML error) means no GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    """One GPU, ``index`` numbered as nvidia-smi and ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` number it."""

    index: int
    name: str
    uuid: str
    memory_bytes: int


def discover_gpus() -> list[Gpu]:
    """Every GPU NVML reports, or none when NVML cannot be used here (said in the log, once)."""
    try:
        import pynvml
    except ImportError:
        log.info("no pynvml (nvidia-ml-py): treating this machine as having no GPU")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("NVML is not available (%s): treating this machine as having no GPU", exc)
        return []
    try:
        return [_describe(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs (%s): treating this machine as having no GPU", exc)
        return []
    finally:
        pynvml.nvmlShutdown()


def _describe(pynvml: object, index: int) -> Gpu:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
    return Gpu(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),  # type: ignore[attr-defined]
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),  # type: ignore[attr-defined]
        memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),  # type: ignore[attr-defined]
    )


def _text(value: str | bytes) -> str:
    """Older nvidia-ml-py releases answer bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_device(device: str, visible_devices: str | None) -> str:
    """The device as the machine numbers it: ``cuda:0`` in a process that sees only GPU 3 is ``cuda:3``.

    A pinned worker runs its models on ``cuda:0``, which tells an operator nothing; its heartbeat reports
    this name instead, so ``/v1/models`` and ``/readyz`` count workers per GPU as nvidia-smi shows them.
    """
    kind, _, index = device.partition(":")
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    if kind != "cuda" or not visible:
        return device
    position = int(index or 0)
    return f"cuda:{visible[position]}" if position < len(visible) else device
