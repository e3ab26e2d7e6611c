"""The PyTorch runtime: a TorchScript file, a ``torch.export`` program, or a model folder (MiniLM's or your own).

On CUDA the preparing thread puts each batch in pinned memory, so the copy to the device in :meth:`run`
is asynchronous and the model thread spends its time on the device, not on host copies. Text models are
pooled where they ran: only one vector per input comes back to the host, not every token's hidden state
(for MiniLM a batch of 512 short texts is 0.8 MB instead of some 30 MB, and no numpy pooling on the
thread that drives the device).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from batchery.errors import ConfigError
from batchery.runtimes.base import Runtime, register_runtime
from batchery.runtimes.heads import Head
from batchery.runtimes.text import TEXT_INPUTS, TextEncoder, stack_tensors, token_lengths

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

log = logging.getLogger(__name__)


@register_runtime("torch")
class TorchRuntime(Runtime):
    """Options: ``source`` ("minilm", or "hf" with the folder in ``path``), ``task``, ``tokenizer``,
    ``max_length``, ``pooling``, ``normalize``, ``labels``, ``activation``, ``fp16``
    (CUDA only), ``cuda_memory_fraction`` (CUDA only: the share of the device's memory this process may
    take, through ``torch.cuda.set_per_process_memory_fraction``) and ``threads`` (the CPU thread count,
    which torch sets for the whole process)."""

    def __init__(self, spec: "ModelSpec", device: str, module: Any, encoder: TextEncoder | None) -> None:
        super().__init__(spec, device)
        self.target = torch.device(device)
        self.module = module
        self.encoder = encoder
        self.fp16 = bool(spec.options.get("fp16", False)) and self.target.type == "cuda"
        self.head = Head(spec.options) if encoder else None
        self.text_inputs = declared_text_inputs(module) if encoder else []

    @classmethod
    def load(cls, spec: "ModelSpec", device: str, settings: "Settings") -> "TorchRuntime":
        target = torch_device(device)
        if spec.options.get("fp16") and target.type != "cuda":
            log.warning("model %s: fp16 is for CUDA devices; running in float32 on %s", spec.name, target)
        if target.type == "cpu" and spec.options.get("threads"):
            torch.set_num_threads(int(spec.options["threads"]))
        fraction = memory_fraction(spec)
        if fraction is not None and target.type == "cuda":
            limit_memory(fraction, target, spec.name)
        from batchery.models.folder import resolved

        spec = resolved(spec)
        encoder = None
        if spec.input in ("text", "pair"):
            encoder = TextEncoder(tokenizer_path(spec), spec.options.get("max_length"), pairs=spec.input == "pair")
        elif spec.input != "tensor":
            raise ConfigError(f"model {spec.name!r}: the torch runtime takes text, pair or tensor input, not {spec.input!r}")
        fp16 = bool(spec.options.get("fp16")) and target.type == "cuda"
        return cls(spec, str(target), place(load_module(spec, torch.device("cpu")), target, fp16), encoder)

    def preprocess(self, inputs: Sequence[Any]) -> list[Any]:
        return self.encoder.tokenize(inputs) if self.encoder is not None else list(inputs)

    def lengths(self, preprocessed: Sequence[Any]) -> list[int] | None:
        return token_lengths(preprocessed) if self.encoder is not None else None

    def prepare(self, inputs: Sequence[Any]) -> dict[str, torch.Tensor]:
        arrays = self.encoder.pad(inputs) if self.encoder is not None else {"input": stack_tensors(inputs)}
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        if self.target.type == "cuda":
            tensors = {name: tensor.pin_memory() for name, tensor in tensors.items()}
        return tensors

    def run(self, prepared: dict[str, torch.Tensor]) -> list[np.ndarray]:
        with torch.inference_mode():
            return self._run_text(prepared) if self.encoder is not None else self._run_tensor(prepared)

    def _run_tensor(self, prepared: dict[str, torch.Tensor]) -> list[np.ndarray]:
        batch = prepared["input"].to(self.target, non_blocking=True)
        output = self.module(batch.half() if self.fp16 else batch)
        return list(first_tensor(output).float().cpu().numpy())

    def _run_text(self, prepared: dict[str, torch.Tensor]) -> list[np.ndarray]:
        on_device = {name: prepared[name].to(self.target, non_blocking=True) for name in self.text_inputs}
        hidden = first_tensor(self.module(*on_device.values()))
        if hidden.ndim == 3 and self.head.pools:
            mask = on_device.get("attention_mask")
            if mask is None:
                mask = prepared["attention_mask"].to(self.target, non_blocking=True)
            return list(pool(hidden, mask, self.head.pooling, self.head.normalize).cpu().numpy())
        return self.head(hidden.float().cpu().numpy(), prepared["attention_mask"].numpy())

    def release_memory(self) -> None:
        """After a CUDA out-of-memory error, return the caching allocator's free blocks so the halves can fit."""
        if self.target.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.module = None
        self.release_memory()


def torch_device(device: str) -> torch.device:
    """``cuda:N`` when CUDA is there; otherwise the CPU, said out loud."""
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s asked for, but torch has no CUDA here: running on the CPU", device)
        return torch.device("cpu")
    return target


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """(batch, dims) float32 from (batch, tokens, dims) hidden states, on their device.

    The same arithmetic as :func:`batchery.runtimes.text.mean_pool` and ``l2_normalize``, in float32 even
    when the model ran in float16, so a runtime's numbers do not depend on where the pooling happened.
    """
    hidden = hidden.float()
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    else:
        pooled = hidden[:, 0]
    return torch.nn.functional.normalize(pooled, dim=-1, eps=1e-12) if normalize else pooled


def memory_fraction(spec: "ModelSpec") -> float | None:
    """``options.cuda_memory_fraction``, checked on any device so that a bad models file fails everywhere."""
    fraction = spec.options.get("cuda_memory_fraction")
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"model {spec.name!r}: cuda_memory_fraction must be above 0 and at most 1, not {fraction!r}")
    return float(fraction)


def limit_memory(fraction: float, target: torch.device, name: str) -> None:
    """Cap this process's share of the device before anything is allocated: past it, a real CUDA
    out-of-memory error is raised, which is how the batcher's splitting of a batch is proven on a GPU."""
    torch.cuda.set_per_process_memory_fraction(fraction, target)
    total = torch.cuda.get_device_properties(target).total_memory
    log.info("model %s: at most %.0f MB of %s for this process", name, fraction * total / 1e6, target)


def place(module: Any, target: torch.device, fp16: bool) -> Any:
    """Halve on the host, then move: the device never holds a float32 copy it would only throw away."""
    if fp16:
        module = module.half()
    return module.to(target)


def load_module(spec: "ModelSpec", target: torch.device) -> Any:
    """A model folder's PyTorch model for a ``source``; else a ``.pt2`` file is a torch.export program and any
    other path TorchScript."""
    from batchery.models.weights import from_folder

    if from_folder(spec):
        from batchery.models import hf

        return hf.reference_model(spec).to(target)
    if not spec.path:
        raise ConfigError(f"model {spec.name!r}: the torch runtime needs a path or options.source = 'minilm' or 'hf'")
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model {spec.name!r}: no such file {path}")
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module().to(target)
        return torch.jit.load(str(path), map_location=target).eval()
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r}: cannot load {path}: {exc}") from exc


def tokenizer_path(spec: "ModelSpec") -> Path:
    from batchery.models.weights import tokenizer_file

    found = tokenizer_file(spec)
    if found is None:
        raise ConfigError(f"model {spec.name!r}: a text model needs options.tokenizer (a tokenizer.json)")
    return found


def declared_text_inputs(module: Any) -> list[str]:
    """The text inputs ``forward`` takes, in its order, so a model that wants no token types gets none."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        names = [argument.name for argument in schema.arguments]
    else:
        parameters = inspect.signature(module.forward).parameters.values()
        names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    declared = [name for name in names if name in TEXT_INPUTS]
    return declared or list(TEXT_INPUTS)


def first_tensor(output: Any) -> torch.Tensor:
    """The tensor a model's output leads with: itself, ``last_hidden_state``, or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "last_hidden_state" in output:
            return output["last_hidden_state"]
        return first_tensor(next(iter(output.values())))
    if isinstance(output, (tuple, list)) and output:
        return first_tensor(output[0])
    raise ConfigError(f"cannot find a tensor in a model output of type {type(output).__name__}")
