"""The ONNX Runtime runtime: any ONNX graph with text, text-pair or tensor inputs, on the CPU or a CUDA device.

A text graph takes ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` if it declares it), int64 of
shape (batch, tokens), and its first output is the last hidden state (batch, tokens, dims), one vector per input
(batch, dims), or logits (batch, labels); :class:`batchery.runtimes.heads.Head` turns it into the task's answer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnxruntime

from batchery.errors import ConfigError
from batchery.runtimes import quantize
from batchery.runtimes.base import Runtime, register_runtime
from batchery.runtimes.heads import Head
from batchery.runtimes.text import TEXT_INPUTS, TextEncoder, stack_tensors, token_lengths

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

log = logging.getLogger(__name__)

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


@register_runtime("onnx")
class OnnxRuntime(Runtime):
    """Options: ``source`` ("minilm" exports the bundled model, "hf" the folder in ``path``), ``task``,
    ``tokenizer``, ``max_length``, ``pooling`` ("mean" | "cls" | "none"), ``normalize``, ``labels``,
    ``activation``, ``threads`` (intra-op threads on the CPU) and ``quantize`` ("int8": serve a checked int8
    copy, see :mod:`batchery.runtimes.quantize`)."""

    def __init__(
        self, spec: "ModelSpec", device: str, session: onnxruntime.InferenceSession, encoder: TextEncoder | None
    ) -> None:
        super().__init__(spec, device)
        self.session: Any = session
        self.encoder = encoder
        self.input_names = [i.name for i in session.get_inputs()]
        unknown = [name for name in self.input_names if name not in TEXT_INPUTS] if encoder else []
        if unknown:
            raise ConfigError(f"model {spec.name!r}: graph inputs {unknown} are not text inputs {TEXT_INPUTS}")
        self.head = Head(spec.options) if encoder else None
        self.tensor_type = _NUMPY_TYPES.get(session.get_inputs()[0].type, np.float32)

    @classmethod
    def load(cls, spec: "ModelSpec", device: str, settings: "Settings") -> "OnnxRuntime":
        if spec.input not in ("text", "pair", "tensor"):
            raise ConfigError(f"model {spec.name!r}: the onnx runtime takes text, pair or tensor input, not {spec.input!r}")
        from batchery.models.folder import resolved

        spec = resolved(spec)
        model_path, tokenizer_path = resolve_files(spec, settings)
        encoder = None
        if spec.input != "tensor":
            if not tokenizer_path:
                raise ConfigError(f"model {spec.name!r}: a text model needs options.tokenizer (a tokenizer.json)")
            encoder = TextEncoder(tokenizer_path, spec.options.get("max_length"), pairs=spec.input == "pair")
        model_path = quantize.serving_path(spec, device, settings, model_path, encoder)
        try:
            options = session_options(spec, settings.worker_threads)
            session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers(device))
        except Exception as exc:
            raise ConfigError(f"model {spec.name!r}: cannot load {model_path}: {exc}") from exc
        if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                log.warning("model %s: the CUDA provider failed to start on %s: running on the CPU", spec.name, device)
            device = "cpu"
        return cls(spec, device, session, encoder)

    def preprocess(self, inputs: Sequence[Any]) -> list[Any]:
        return self.encoder.tokenize(inputs) if self.encoder is not None else list(inputs)

    def lengths(self, preprocessed: Sequence[Any]) -> list[int] | None:
        return token_lengths(preprocessed) if self.encoder is not None else None

    def prepare(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        if self.encoder is not None:
            return self.encoder.pad(inputs)
        return {self.input_names[0]: stack_tensors(inputs).astype(self.tensor_type, copy=False)}

    def run(self, prepared: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {name: prepared[name] for name in self.input_names if name in prepared}
        output = self.session.run(None, feed)[0]
        if self.head is not None:
            return self.head(output, prepared["attention_mask"])
        return list(np.asarray(output))

    def example_input(self) -> Any:
        """For a tensor model without ``options.shape``, zeros of the shape the graph declares past the batch."""
        if self.encoder is None and "shape" not in self.spec.options:
            dims = self.session.get_inputs()[0].shape[1:]
            if all(isinstance(dim, int) for dim in dims):
                return np.zeros(dims, dtype=np.float32)
        return super().example_input()

    def close(self) -> None:
        self.session = None


def resolve_files(spec: "ModelSpec", settings: "Settings") -> tuple[Path, Path | None]:
    """The ONNX file and tokenizer: ``options.tokenizer`` wins over what a ``source`` provides, and so does
    ``path`` for MiniLM (for ``source = "hf"``, ``path`` is the folder to export)."""
    from batchery.models.weights import SOURCES

    source = spec.options.get("source")
    model_path = Path(spec.path).expanduser() if spec.path and source != "hf" else None
    tokenizer = spec.options.get("tokenizer")
    tokenizer_path = Path(str(tokenizer)).expanduser() if tokenizer else None
    if source in SOURCES:
        if model_path is None or tokenizer_path is None:
            from batchery.models import hf

            exported, bundled = hf.artifacts(spec, settings)
            model_path = model_path or exported
            tokenizer_path = tokenizer_path or bundled
    elif source:
        raise ConfigError(f"model {spec.name!r}: unknown source {source!r} (known: {SOURCES})")
    if model_path is None:
        raise ConfigError(f"model {spec.name!r}: the onnx runtime needs a path to an .onnx file")
    if not model_path.is_file():
        raise ConfigError(f"model {spec.name!r}: no such file {model_path}")
    return model_path, tokenizer_path


def providers(device: str) -> list[Any]:
    """CUDA on ``cuda:N`` when this onnxruntime build has it; otherwise the CPU, said out loud."""
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            _, _, index = device.partition(":")
            return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        log.warning("device %s asked for, but this onnxruntime has no CUDA provider: running on the CPU", device)
    return ["CPUExecutionProvider"]


def session_options(spec: "ModelSpec", process_threads: int = 0) -> onnxruntime.SessionOptions:
    """Intra-op threads: the model's ``threads`` option, else the process's share of the cores (its pool sets
    ``worker_threads`` so that K processes on C cores run C/K threads each), else all of its cores."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(spec.options.get("threads") or process_threads or default_threads())
    options.inter_op_num_threads = 1
    return options


def default_threads() -> int:
    """The process's cores, less one for the thread preparing the next batch once there are cores to spare."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores - 1 if cores > 2 else cores

