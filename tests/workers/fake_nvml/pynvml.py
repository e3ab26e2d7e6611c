"""A stand-in for nvidia-ml-py's ``pynvml`` on a machine with no GPU: the NVML boundary, and nothing else.

Put this folder first on ``PYTHONPATH`` of a process and ``import pynvml`` finds it. It reports
``FAKE_NVML_GPUS`` GPUs; with that variable unset it fails as NVML does where no driver is installed.
Only the calls batchery makes are here, with the real module's names and return shapes.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

GIB = 2**30


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 (the real module's name)
    pass


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    pass


_initialised = 0


def _count() -> int:
    raw = os.environ.get("FAKE_NVML_GPUS")
    if raw is None:
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    return int(raw)


def nvmlInit() -> None:  # noqa: N802
    global _initialised
    _count()
    _initialised += 1


def nvmlShutdown() -> None:  # noqa: N802
    global _initialised
    if not _initialised:
        raise NVMLError("Uninitialized")
    _initialised -= 1


def nvmlDeviceGetCount() -> int:  # noqa: N802
    if not _initialised:
        raise NVMLError("Uninitialized")
    return _count()


def nvmlDeviceGetHandleByIndex(index: int) -> SimpleNamespace:  # noqa: N802
    if not 0 <= index < nvmlDeviceGetCount():
        raise NVMLError_InvalidArgument("Invalid Argument")
    return SimpleNamespace(index=index)


def nvmlDeviceGetName(handle: SimpleNamespace) -> str:  # noqa: N802
    return "Fake GPU (no CUDA behind it)"


def nvmlDeviceGetUUID(handle: SimpleNamespace) -> str:  # noqa: N802
    return f"GPU-00000000-0000-0000-0000-{handle.index:012d}"


def nvmlDeviceGetMemoryInfo(handle: SimpleNamespace) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(total=80 * GIB, free=80 * GIB, used=0)
