"""Recognising a framework's out-of-memory error, whichever framework raised it.

Each framework says it differently: PyTorch raises ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``
is the same class) on CUDA and a plain ``RuntimeError`` from its CPU allocator; ONNX Runtime raises its
generic ``Fail``/``RuntimeException`` with the allocator's message. What they share is the message, so that is
what is matched, after the one exception class that can be matched by type. torch is never imported here:
if no runtime has imported it, no torch error can be in flight.
"""

from __future__ import annotations

import re
import sys

#: Messages of allocation failures: torch's CPU allocator, ONNX Runtime's arena and CUDA provider, CUDA
#: itself, cuBLAS/cuDNN workspace allocation, and C++'s bad_alloc surfacing through a binding.
PATTERNS = re.compile(
    r"out of memory"
    r"|failed to allocate memory"
    r"|can't allocate memory"
    r"|cudaErrorMemoryAllocation"
    r"|CUBLAS_STATUS_ALLOC_FAILED"
    r"|CUDNN_STATUS_ALLOC_FAILED"
    r"|bad_alloc",
    re.IGNORECASE,
)


def out_of_memory_message(exc: BaseException) -> str | None:
    """A one-line account of ``exc`` if it is an out-of-memory error, else None.

    The line quoted is the one that names the failure: TorchScript, for one, leads with a generic line.
    """
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    text = str(exc)
    found = PATTERNS.search(text)
    if not (found or (oom_type is not None and isinstance(exc, oom_type))):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    line = next((line for line in lines if PATTERNS.search(line)), lines[0]) if found else lines[0]
    return f"{type(exc).__name__}: {line[:500]}"
