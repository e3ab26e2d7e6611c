"""The runtime interface: what the batcher needs from a loaded model, and nothing more.

A runtime turns a list of inputs into a list of outputs in three steps, so that host-side work overlaps the
device work: :meth:`Runtime.preprocess` handles each item as it arrives (tokenising, on the submitting chunk's
thread, which also tells the batcher each item's length), :meth:`Runtime.prepare` makes a batch of them on
the batcher's preparing thread (padding, stacking), and :meth:`Runtime.run` runs it on the one thread that
owns the model. :meth:`Runtime.infer` is what the batcher calls: :meth:`run`, with the framework's
out-of-memory errors turned into :class:`DeviceOutOfMemory`.
A new runtime is one new module that subclasses :class:`Runtime` and registers itself by name.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from batchery.errors import BatcheryError, ConfigError, DeviceOutOfMemory
from batchery.runtimes.memory import out_of_memory_message

if TYPE_CHECKING:
    from batchery.models.registry import ModelSpec
    from batchery.settings import Settings

log = logging.getLogger(__name__)
RUNTIMES: dict[str, type["Runtime"]] = {}
#: Built-in runtimes are imported only when a model needs them: a worker serving echo never imports torch.
BUILTIN_MODULES = {"echo": "batchery.runtimes.echo", "onnx": "batchery.runtimes.onnx", "torch": "batchery.runtimes.torch"}


def register_runtime(name: str) -> Callable[[type["Runtime"]], type["Runtime"]]:
    """Class decorator: make a runtime loadable by the name a models file gives in ``runtime = ...``."""

    def register(cls: type[Runtime]) -> type[Runtime]:
        cls.name = name
        RUNTIMES[name] = cls
        return cls

    return register


class Runtime(ABC):
    """A model loaded on one device."""

    name: ClassVar[str] = ""
    #: True for models that exist for tests and benchmarks only; shown as such in the model list.
    synthetic: ClassVar[bool] = False

    def __init__(self, spec: "ModelSpec", device: str) -> None:
        self.spec = spec
        self.device = device

    @classmethod
    def load(cls, spec: "ModelSpec", device: str, settings: "Settings") -> "Runtime":
        """Load the model on ``device`` ("cpu" or "cuda:N"); the default just constructs the class."""
        return cls(spec, device)

    def preprocess(self, inputs: Sequence[Any]) -> list[Any]:
        """Per-item host work, done as items arrive; :meth:`prepare` gets what this returns.

        It must not raise for a bad input: keep the input as it is and let :meth:`prepare` reject it.
        """
        return list(inputs)

    def lengths(self, preprocessed: Sequence[Any]) -> list[int] | None:
        """Each item's length in what a batch is padded to (tokens), or None where batches are not padded.

        The batcher uses it to group items of like length and to hold a batch to ``max_batch_tokens``.
        """
        return None

    def prepare(self, inputs: Sequence[Any]) -> Any:
        """Host-side work for one batch (padding, stacking) of raw or preprocessed inputs, beside the device thread."""
        return list(inputs)

    def token_counts(self, prepared: Any) -> tuple[int, int] | None:
        """``(real tokens, padded tokens)`` of a prepared batch, for text models; None otherwise.

        Read from the ``attention_mask`` a text runtime prepares, so every text runtime reports it alike.
        """
        mask = prepared.get("attention_mask") if isinstance(prepared, dict) else None
        if mask is None:
            return None
        return int(mask.sum()), int(mask.numel() if hasattr(mask, "numel") else mask.size)

    @abstractmethod
    def run(self, prepared: Any) -> Sequence[Any]:
        """Run one prepared batch; return one output per input, in order (numpy arrays or JSON values)."""

    def infer(self, prepared: Any) -> Sequence[Any]:
        """:meth:`run`, with the framework's own out-of-memory errors raised as :class:`DeviceOutOfMemory`.

        The batcher answers that error by splitting the batch, so the framework's error, and the tensors its
        traceback holds, are let go before the halves run; :meth:`release_memory` then returns cached blocks.
        """
        try:
            return self.run(prepared)
        except BatcheryError:
            raise
        except Exception as exc:
            message = out_of_memory_message(exc)
            if message is None:
                raise
        self.release_memory()
        raise DeviceOutOfMemory(f"model {self.spec.name}: {message}")

    def release_memory(self) -> None:
        """Hand cached device memory back after an out-of-memory error; the default has nothing cached."""

    def example_input(self) -> Any:
        """A valid input for warm-up: text, two texts for pairs, zeros of ``options["shape"]`` for tensors, a
        string for JSON."""
        if self.spec.input == "tensor":
            return _zeros(self.spec.options.get("shape", [1]))
        if self.spec.input == "pair":
            return ["warm up", "a passage to warm up on"]
        return "warm up"

    def warm_up_batch_sizes(self) -> list[int]:
        """``max_batch_size`` and the smaller sizes in ``options.warm_up_batch_sizes``, smallest first."""
        configured = self.spec.options.get("warm_up_batch_sizes", ())
        sizes = {self.spec.max_batch_size, *(int(size) for size in configured)}
        return sorted(size for size in sizes if 1 <= size <= self.spec.max_batch_size)

    def warm_up(self) -> list[int]:
        """Run one batch at each warm-up size before serving; returns the sizes that ran.

        Runtimes allocate, plan and tune per shape on first sight (CUDA kernels and memory pools, ORT's
        arena): a batch at the largest size makes that happen before the worker is counted live, rather than
        on a client's first full batch. A size that runs out of memory is said in the log and ends the
        warm-up, since bigger ones will not fit either; the batcher splits such batches when they come. When
        not even the smallest size fits, halves of it are tried, and a batch of one that fails is fatal.
        """
        pending, warmed = self.warm_up_batch_sizes(), []
        while pending:
            size = pending.pop(0)
            try:
                self.infer(self.prepare([self.example_input()] * size))
            except DeviceOutOfMemory as exc:
                if size == 1:
                    raise
                log.warning("model %s: a warm-up batch of %d does not fit: %s", self.spec.name, size, exc.message)
                pending = [] if warmed else [size // 2]
                continue
            warmed.append(size)
        return warmed

    def close(self) -> None:
        """Release device memory and sessions; the default has nothing to release."""


def load_runtime(spec: "ModelSpec", device: str, settings: "Settings") -> Runtime:
    """Load the runtime a model spec names, importing its built-in module on first use."""
    if spec.runtime not in RUNTIMES and spec.runtime in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[spec.runtime])
    try:
        cls = RUNTIMES[spec.runtime]
    except KeyError:
        raise ConfigError(f"model {spec.name!r}: unknown runtime {spec.runtime!r} (known: {sorted(RUNTIMES)})")
    return cls.load(spec, device, settings)


def _zeros(shape: Sequence[int]) -> Any:
    if len(shape) == 1:
        return [0.0] * int(shape[0])
    return [_zeros(shape[1:]) for _ in range(int(shape[0]))]
