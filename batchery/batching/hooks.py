"""Hooks around a batch: metrics, failure injection and the like attach here instead of into the batcher.

A hook implements only what it needs; every method of the base class does nothing. Hooks run in the order
added before a batch and in reverse after it, and a hook that raises is logged and never stops a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from batchery.batching.queue import Item
    from batchery.batching.ticket import Ticket
    from batchery.models.registry import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchShape:
    """How full a prepared batch is: items against the model's ``max_batch_size``, real tokens against padded.

    ``tokens`` and ``padded_tokens`` are None for inputs that are not token sequences (tensors, JSON).
    """

    items: int
    capacity: int
    tokens: int | None = None
    padded_tokens: int | None = None

    @property
    def fill(self) -> float:
        return self.items / self.capacity if self.capacity else 1.0

    @property
    def padding_fraction(self) -> float | None:
        if not self.padded_tokens:
            return None
        return 1.0 - self.tokens / self.padded_tokens


class BatchHook:
    def on_submit(self, spec: "ModelSpec", ticket: "Ticket") -> None:
        """A chunk's items are about to be queued; runs on the chunk task's own thread, so what is current
        there (its trace span) can be kept on the ticket (``ticket.context``) for the hooks around batches."""

    def before_batch(self, spec: "ModelSpec", items: Sequence["Item"]) -> None:
        """The batch is formed and about to be prepared; may raise to fail the whole batch on purpose."""

    def after_prepare(self, spec: "ModelSpec", items: Sequence["Item"], shape: BatchShape) -> None:
        """The batch is prepared (tokenised, padded, stacked) and queued for the device."""

    def after_batch(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any], seconds: float) -> None:
        """The model ran (``results`` holds outputs or :class:`BatcheryError`s, one per item)."""

    def after_write(self, spec: "ModelSpec", items: Sequence["Item"], seconds: float) -> None:
        """The batch's outputs are stored in Redis."""

    def after_store(self, spec: "ModelSpec", items: Sequence["Item"], results: Sequence[Any]) -> None:
        """Every item's final result is in Redis: an output or a :class:`BatcheryError`, one per item.

        Unlike :meth:`after_batch` this sees items that never reached the model too (cancelled, or past
        their deadline, while they waited), and only results that were stored.
        """


_HOOKS: list[BatchHook] = []


def add_hook(hook: BatchHook) -> BatchHook:
    _HOOKS.append(hook)
    return hook


def remove_hook(hook: BatchHook) -> None:
    if hook in _HOOKS:
        _HOOKS.remove(hook)


def call(name: str, *args: Any, reverse: bool = False) -> None:
    """Run one hook method on every hook; ``before_*`` hooks may raise, the others are only logged."""
    for hook in reversed(_HOOKS) if reverse else list(_HOOKS):
        try:
            getattr(hook, name)(*args)
        except Exception:
            if name.startswith("before_"):
                raise
            log.exception("batch hook %s.%s failed", type(hook).__name__, name)
