"""A model folder as PyTorch and as ONNX: the reference model built from its files, its export, and the check
that the export reproduces the reference.

Any Hugging Face or sentence-transformers folder of a BERT-like encoder works (``source = "hf"``), and so does
the bundled all-MiniLM-L6-v2 (``source = "minilm"``). An embedding model is exported to its last hidden state
(pooled afterwards, as the folder pools); a classifier or cross-encoder to its logits. The ONNX file is exported
once per weights, task and exporter version and cached under the data directory, so workers after the first
start in well under a second; it is put in place only once it agrees with PyTorch to :data:`EXPORT_TOLERANCE`.
torch and transformers are imported only to build or export the model: a worker that finds the export cached
runs on onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import inspect
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from batchery.errors import ConfigError
from batchery.models.folder import resolved
from batchery.models.weights import PACKAGE, weights_dir, weights_file
from batchery.runtimes.text import TEXT_INPUTS, TextEncoder, check_text_options, embeddings

if TYPE_CHECKING:
    import torch

    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

__all__ = ["PACKAGE", "artifacts", "cache_key", "reference_model", "reference_embeddings", "weights_dir"]
log = logging.getLogger(__name__)

#: Bump when the exported graph changes in a way the weights and library versions do not show.
EXPORT_FORMAT = 1
OPSET = 17
#: The export must reproduce PyTorch to this much per element, or it is refused before it is cached.
EXPORT_TOLERANCE = 1e-4
_EXAMPLE = ["an example sentence to trace", "short"]
_CHECK = ["one", "a check batch of another shape, so that a baked-in shape fails", "three words here"]
_EXAMPLE_PAIRS = [["an example query", "a passage to trace with it"], ["short", "pair"]]
_CHECK_PAIRS = [["one", "a check batch of another shape"], ["so that a baked-in shape fails", "here"], ["a", "b"]]
#: Weight names of checkpoints older than transformers' current ones.
_RENAMED = {".gamma": ".weight", ".beta": ".bias"}


def cache_key(folder: Path, task: str = "embedding") -> str:
    """Changes with the weights' content, the task and the exporting libraries, so a stale export is never reused."""
    digest = hashlib.sha256()
    digest.update(f"format={EXPORT_FORMAT};opset={OPSET};".encode())
    if task != "embedding":
        digest.update(f"task={task};".encode())
    for package in ("torch", "transformers", "onnx"):
        digest.update(f"{package}={_version(package)};".encode())
    digest.update((folder / "config.json").read_bytes())
    with weights_file(folder).open("rb") as weights:
        for block in iter(functools.partial(weights.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def artifacts(spec: "ModelSpec", settings: "Settings") -> tuple[Path, Path]:
    """The cached ONNX file (exported now if missing) and the tokenizer that goes with it."""
    folder = weights_dir(spec)
    target = settings.data_path / "models" / spec.name / cache_key(folder, spec.task) / "model.onnx"
    if not target.is_file():
        with _export_lock(target.parent):
            if not target.is_file():
                export_onnx(spec, folder, target)
    return target, folder / "tokenizer.json"


def reference_model(spec: "ModelSpec", attention: str = "sdpa") -> "torch.nn.Module":
    """The PyTorch model in eval mode on the CPU, in float32: ``(input_ids, attention_mask, token_type_ids)``
    in, the last hidden state (embeddings) or the logits (classifiers, cross-encoders) out. Built from the
    folder's files alone, so nothing is looked up on a model hub."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    folder = weights_dir(spec)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r}: {folder}/config.json does not describe a model: {exc}") from exc
    embedding = spec.task == "embedding"
    factory = AutoModel if embedding else AutoModelForSequenceClassification
    try:
        model = _build(factory, config, attention, pooler=not embedding)
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r}: transformers cannot build {config.model_type!r} for {spec.task}: {exc}") from exc
    _load_weights(spec, model, folder, ignore=("pooler.",) if embedding else ())
    return _traced_class()(model, "last_hidden_state" if embedding else "logits").eval()


def reference_embeddings(
    model: "torch.nn.Module", batch: dict[str, np.ndarray], pooling: str = "mean", normalize: bool = True
) -> np.ndarray:
    """Pooled (mean by default), L2-normalised embeddings computed in torch: the yardstick for every runtime."""
    import torch

    with torch.inference_mode():
        inputs = [torch.from_numpy(batch[name]) for name in TEXT_INPUTS]
        hidden = model(*inputs).float()
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = inputs[1].unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()


def export_onnx(spec: "ModelSpec", folder: Path, target: Path) -> None:
    """Export with the TorchScript exporter and check the result before it is put in place.

    Eager attention and a padded example keep the attention mask a real graph input; the check batch has
    another shape, so an exporter that baked in the example's shape or mask is caught here, not in serving.
    """
    import torch

    log.info("exporting %s (%s) from %s to %s", spec.name, spec.task, folder, target)
    spec = resolved(spec)
    model = reference_model(spec, attention="eager")
    pairs = spec.input == "pair"
    encoder = TextEncoder(folder / "tokenizer.json", spec.options.get("max_length"), pairs=pairs)
    batch = encoder.encode(_EXAMPLE_PAIRS if pairs else _EXAMPLE)
    names = model.input_names
    output = model.output_name
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    axes[output] = {0: "batch", 1: "tokens"} if output == "last_hidden_state" else {0: "batch"}
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            _quiet_exporter_warnings()
            torch.onnx.export(
                model, tuple(torch.from_numpy(batch[name]) for name in names), str(partial), input_names=names,
                output_names=[output], dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        _check_export(spec, partial, model, encoder.encode(_CHECK_PAIRS if pairs else _CHECK))
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def export_difference(spec: "ModelSpec", path: Path, model: "torch.nn.Module", batch: dict[str, np.ndarray]) -> float:
    """The largest difference between the ONNX file's and PyTorch's outputs on ``batch``, as clients get them:
    embeddings pooled as the model pools them, logits as they are."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
    with torch.inference_mode():
        expected = model(*(torch.from_numpy(batch[name]) for name in TEXT_INPUTS)).numpy()
    if model.output_name == "last_hidden_state":
        pooling, normalize = check_text_options(spec.options)
        mask = batch["attention_mask"]
        exported, expected = (np.stack(embeddings(out, mask, pooling, normalize)) for out in (exported, expected))
    return float(np.abs(exported - expected).max())


def _check_export(spec: "ModelSpec", path: Path, model: "torch.nn.Module", batch: dict[str, np.ndarray]) -> None:
    difference = export_difference(spec, path, model, batch)
    if not difference <= EXPORT_TOLERANCE:
        raise ConfigError(
            f"model {spec.name!r}: its ONNX export differs from PyTorch by {difference:.2e}, more than "
            f"{EXPORT_TOLERANCE:.0e}: not served on ONNX Runtime (runtime = 'torch' serves the PyTorch model)"
        )


def _build(factory: Any, config: Any, attention: str, pooler: bool) -> "torch.nn.Module":
    """The model with random weights; an encoder without a pooling layer where its class can leave it out."""
    try:
        return factory.from_config(config, attn_implementation=attention, **({} if pooler else {"add_pooling_layer": False}))
    except TypeError:
        return factory.from_config(config, attn_implementation=attention)


def _load_weights(spec: "ModelSpec", model: "torch.nn.Module", folder: Path, ignore: tuple[str, ...]) -> None:
    """The folder's weights in float32, under the model's own names whether or not the file prefixes them
    with the base model's name (``bert.``); refused when any the model needs is missing."""
    own = model.state_dict()
    prefix = f"{model.base_model_prefix}."
    weights: dict[str, Any] = {}
    for name, tensor in _read_weights(weights_file(folder)).items():
        for old, new in _RENAMED.items():
            name = name[: -len(old)] + new if name.endswith(old) else name
        for candidate in (name, name.removeprefix(prefix), prefix + name):
            if candidate in own:
                weights[candidate] = tensor.float()
                break
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(k for k in set(own) - set(weights) - buffers if not k.startswith(ignore))
    if missing:
        raise ConfigError(f"model {spec.name!r}: {folder} lacks weights {missing[:5]} for a {spec.task} model")
    model.load_state_dict(weights, strict=False)


def _read_weights(path: Path) -> Mapping[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def _quiet_exporter_warnings() -> None:
    """Silence what the exporter always says about these models: the check after the export is what counts."""
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
def _traced_class() -> type:
    """Defined on first use so that importing this module does not import torch."""
    import torch

    class Traced(torch.nn.Module):
        """A transformers model with plain tensors in and one out, which both exporters and TorchScript need.

        Token types are passed on only to a model that takes them (DistilBERT does not), and only the inputs
        it takes are graph inputs of its export (:attr:`input_names`).
        """

        def __init__(self, model: torch.nn.Module, output_name: str) -> None:
            super().__init__()
            self.model = model
            self.output_name = output_name
            accepted = inspect.signature(model.forward).parameters
            self.input_names = [name for name in TEXT_INPUTS if name in accepted]

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            output: Any = self.model(**{name: given[name] for name in self.input_names})
            return getattr(output, self.output_name)

    return Traced


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"
