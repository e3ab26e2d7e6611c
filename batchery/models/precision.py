"""Whether a model runs as it was exported or as a quantised copy, read from its ``quantize`` option.

``options.quantize = "int8"`` on an ONNX model makes the worker serve a dynamically quantised copy of it
(:mod:`batchery.runtimes.quantize` makes and checks it). An int8 copy's outputs are close to the original's,
not equal, so the model's cache identity says so: its outputs never share a result-cache entry with the
full-precision model's. Kept apart from the runtime so that the API can read it without importing ONNX Runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchery.errors import ConfigError

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec

QUANTIZATIONS = ("int8",)
#: The runtimes that can serve a quantised copy; elsewhere (PyTorch on a GPU, say) the option does nothing.
QUANTIZING_RUNTIMES = ("onnx",)
_DEVICE_KINDS = ("cpu", "cuda")


def quantization(spec: "ModelSpec") -> str | None:
    """``"int8"`` when this spec, as it runs on one kind of device, serves a quantised copy; None otherwise."""
    value: Any = spec.options.get("quantize")
    if value in (None, "", "none", False):
        return None
    if value not in QUANTIZATIONS:
        raise ConfigError(f"model {spec.name!r}: quantize must be one of {QUANTIZATIONS} or 'none', not {value!r}")
    return value if spec.runtime in QUANTIZING_RUNTIMES else None


def by_device(spec: "ModelSpec") -> dict[str, str | None]:
    """Each device kind's quantisation, as the model list shows it beside its runtimes."""
    return {kind: quantization(spec.on_device(kind)) for kind in _DEVICE_KINDS}


def quantized(spec: "ModelSpec") -> str | None:
    """``"int8"`` when any kind of device serves the model's int8 copy: what its jobs and cache entries say."""
    found = sorted({q for q in by_device(spec).values() if q})
    return found[0] if found else None


def cache_ref(spec: "ModelSpec") -> str:
    """``<name>@<version>``, plus ``+int8`` when the model is :func:`quantized`.

    Full-precision keys stay as they were, so an existing cache is still valid; switching a model to int8
    (or back) starts a cache of its own.
    """
    found = quantized(spec)
    return f"{spec.name}@{spec.version}" + (f"+{found}" if found else "")


def check(spec: "ModelSpec") -> None:
    """Raise ConfigError for a ``quantize`` value no runtime knows, in the model's options or a device table,
    and for one that no device would act on (the model runs on PyTorch everywhere): int8 is never claimed
    where it is not served."""
    asked = [spec.options.get("quantize")] + [table.get("options", {}).get("quantize") for table in spec.on.values()]
    if any(value not in (None, "", "none", False) for value in asked) and not quantized(spec):
        raise ConfigError(f"model {spec.name!r}: quantize applies to the {' and '.join(QUANTIZING_RUNTIMES)} runtime")
    if quantized(spec) and spec.input in ("text", "pair") and spec.task != "embedding":
        raise ConfigError(
            f"model {spec.name!r}: an int8 copy is checked against fp32 by the cosine of its vectors, which only "
            f"an embedding model gives; a {spec.task} model runs in fp32"
        )
    quantization(spec)
