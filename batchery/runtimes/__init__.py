"""Model runtimes: ONNX Runtime, PyTorch and the synthetic echo model, one module each."""

from batchery.runtimes.base import RUNTIMES, Runtime, load_runtime, register_runtime

__all__ = ["RUNTIMES", "Runtime", "load_runtime", "register_runtime"]
