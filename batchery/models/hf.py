"""Everything specific to the all-MiniLM-L6-v2 weights: where they are, the PyTorch model, its ONNX export.

The ONNX file is exported once per weights and exporter version and cached under the data directory, so
workers after the first start in well under a second. torch and transformers are imported only to build
or export the model: a worker that finds the export cached runs on onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from batchery.errors import ConfigError, ModelError
from batchery.models.weights import PACKAGE, safetensors_file, weights_dir
from batchery.runtimes.text import TEXT_INPUTS, TextEncoder, mean_pool

if TYPE_CHECKING:
    import torch

    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

log = logging.getLogger(__name__)

#: Bump when the exported graph changes in a way the weights and library versions do not show.
EXPORT_FORMAT = 1
OPSET = 17
#: The export must reproduce PyTorch to this much per element, or it is rejected before it is cached.
EXPORT_TOLERANCE = 1e-4
_EXAMPLE = ["an example sentence to trace", "short"]
_CHECK = ["one", "a check batch of another shape, so that a baked-in shape fails", "three words here"]


def cache_key(folder: Path) -> str:
    """Changes with the weights' content and with the exporting libraries, so a stale export is never reused."""
    digest = hashlib.sha256()
    digest.update(f"format={EXPORT_FORMAT};opset={OPSET};".encode())
    for package in ("torch", "transformers", "onnx"):
        digest.update(f"{package}={_version(package)};".encode())
    digest.update((folder / "config.json").read_bytes())
    with safetensors_file(folder).open("rb") as weights:
        for block in iter(functools.partial(weights.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def artifacts(spec: "ModelSpec", settings: "Settings") -> tuple[Path, Path]:
    """The cached ONNX file (exported now if missing) and the tokenizer that goes with it."""
    folder = weights_dir(spec)
    target = settings.data_path / "models" / "minilm" / cache_key(folder) / "model.onnx"
    if not target.is_file():
        with _export_lock(target.parent):
            if not target.is_file():
                export_onnx(spec, folder, target)
    return target, folder / "tokenizer.json"


def reference_model(spec: "ModelSpec", attention: str = "sdpa") -> "torch.nn.Module":
    """The PyTorch model in eval mode on the CPU, in float32: ``(input_ids, attention_mask, token_type_ids)``
    in, last hidden state out. Built from the folder's files alone, so nothing is looked up on a model hub."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    folder = weights_dir(spec)
    config = BertConfig.from_json_file(str(folder / "config.json"))
    config._attn_implementation = attention
    bert = BertModel(config, add_pooling_layer=False)
    own = bert.state_dict()
    weights = {k.removeprefix("bert."): v.float() for k, v in load_file(str(safetensors_file(folder))).items()}
    missing = sorted(set(own) - set(weights) - {name for name, _ in bert.named_buffers()})
    if missing:
        raise ConfigError(f"model {spec.name!r}: {folder} lacks weights {missing[:5]}")
    bert.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
    return _hidden_states_class()(bert).eval()


def reference_embeddings(model: "torch.nn.Module", batch: dict[str, np.ndarray]) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings computed in torch: the yardstick for every runtime's numbers."""
    import torch

    with torch.inference_mode():
        inputs = [torch.from_numpy(batch[name]) for name in TEXT_INPUTS]
        hidden = model(*inputs).float()
        weights = inputs[1].unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def export_onnx(spec: "ModelSpec", folder: Path, target: Path) -> None:
    """Export with the TorchScript exporter and check the result before it is put in place.

    Eager attention and a padded example keep the attention mask a real graph input; the check batch has
    another shape, so an exporter that baked in the example's shape or mask is caught here, not in serving.
    """
    import torch

    log.info("exporting %s from %s to %s", spec.name, folder, target)
    model = reference_model(spec, attention="eager")
    encoder = TextEncoder(folder / "tokenizer.json")
    batch = encoder.encode(_EXAMPLE)
    example = tuple(torch.from_numpy(batch[name]) for name in TEXT_INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*TEXT_INPUTS, "last_hidden_state")}
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            _quiet_exporter_warnings()
            torch.onnx.export(
                model, example, str(partial), input_names=list(TEXT_INPUTS), output_names=["last_hidden_state"],
                dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        _check_export(partial, model, encoder.encode(_CHECK))
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _check_export(path: Path, model: "torch.nn.Module", batch: dict[str, np.ndarray]) -> None:
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
    with torch.inference_mode():
        expected = model(*(torch.from_numpy(batch[name]) for name in TEXT_INPUTS)).numpy()
    mask = batch["attention_mask"]
    difference = float(np.abs(mean_pool(exported, mask) - mean_pool(expected, mask)).max())
    if not difference <= EXPORT_TOLERANCE:
        raise ModelError(f"the ONNX export of {path.parent.name} differs from PyTorch by {difference:.2e}")


def _quiet_exporter_warnings() -> None:
    """Silence what the exporter always says about this model: the check after the export is what counts."""
    import torch

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
    warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)


@contextlib.contextmanager
def _export_lock(folder: Path) -> Iterator[None]:
    """One exporter per cache entry across processes; the others wait and then find the file in place."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.cache
def _hidden_states_class() -> type:
    """Defined on first use so that importing this module does not import torch."""
    import torch

    class HiddenStates(torch.nn.Module):
        """BertModel with plain tensors in and out, which both exporters and TorchScript need."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            output: Any = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.last_hidden_state

    return HiddenStates


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"
