"""``synthetic-embed``: a stand-in text model that costs the device next to nothing.

It takes MiniLM's tokens and gives 384 floats per text (a weighted bag of random token vectors), so every
other part of the path is the real one: tokenising, batching, pinned copies to the device and back, the
Redis writes, the API, the client. Its throughput is the ceiling the host side puts on any model, which
says at once whether a slow run was the GPU's doing or the pipeline's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "synthetic-embed"
BATCHING = ("max_batch_size", "max_batch_tokens", "bucket_by_length", "max_wait_ms")
DIMS = 384
SEED = 0


def build(path: Path, vocab_size: int) -> Path:
    """A TorchScript file of the model, for the torch runtime's ``path``."""
    import torch

    class SyntheticEmbed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(SEED)
            self.table = torch.nn.EmbeddingBag(vocab_size, DIMS, mode="sum")
            self.table.weight.data = torch.randn(vocab_size, DIMS, generator=generator)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            weights = attention_mask.to(self.table.weight.dtype)
            summed = self.table(input_ids, per_sample_weights=weights)
            return summed / weights.sum(1, keepdim=True).clamp(min=1.0)

    torch.jit.save(torch.jit.script(SyntheticEmbed().eval()), str(path))
    return path


def models_entry(model_path: Path, minilm: dict[str, Any]) -> dict[str, Any]:
    """Batched and tokenised exactly as ``minilm`` is in the run's models file, on each kind of device."""
    return {
        "runtime": "torch",
        "path": str(model_path),
        "input": "text",
        **_batching(minilm),
        "description": "synthetic: a bag of random token vectors, for the host path's ceiling",
        "options": {"tokenizer": minilm["options"]["tokenizer"], "max_length": 256, "pooling": "mean", "normalize": True},
        "on": {kind: {**_batching(table), "options": table.get("options", {})} for kind, table in minilm.get("on", {}).items()},
    }


def _batching(table: dict[str, Any]) -> dict[str, Any]:
    return {field: table[field] for field in BATCHING if field in table}
