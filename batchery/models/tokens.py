"""A text model's tokenizer on the API's side: to count the tokens a request costs, and to read token ids.

The worker tokenises for the model (:mod:`batchery.runtimes.text`); the API needs the same tokenizer for two
things only, and loads no worker code for them: ``usage`` in OpenAI-shaped answers counts the tokens the model
runs (special tokens included, and truncated at the model's ``max_length``, as the worker truncates), and token
arrays sent to ``/v1/embeddings`` are decoded to text with it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from batchery.errors import BadRequest, ConfigError
from batchery.models.folder import max_length, read_json
from batchery.models.registry import ModelSpec
from batchery.models.weights import from_folder, tokenizer_file, weights_dir

DEFAULT_MAX_LENGTH = 512


class Tokens:
    """Counts and decodes with one tokenizer file, truncating as the worker does and padding nothing."""

    def __init__(self, path: Path, max_length: int | None) -> None:
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ConfigError(f"cannot load tokenizer {path}: {exc}") from exc
        configured = self.tokenizer.truncation or {}
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(max_length or configured.get("max_length") or DEFAULT_MAX_LENGTH))
        self.vocab_size = self.tokenizer.get_vocab_size()

    def count(self, texts: Sequence[str]) -> list[int]:
        """Each text's tokens as the model runs them."""
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch_fast(list(texts))]

    def decode(self, ids: Sequence[Sequence[int]], param: str = "input") -> list[str]:
        """Token ids back to text (special tokens dropped: the worker adds its own); an id outside the
        vocabulary is a 400 naming the array."""
        for index, row in enumerate(ids):
            bad = next((i for i in row if not 0 <= i < self.vocab_size), None)
            if bad is not None:
                raise BadRequest(
                    f"{param}[{index}] holds token id {bad}, outside this model's vocabulary of {self.vocab_size}",
                    param=param,
                )
        return self.tokenizer.decode_batch([list(row) for row in ids], skip_special_tokens=True)


def tokens_of(spec: ModelSpec) -> Tokens | None:
    """The model's tokenizer, loaded once per file and length; None for a model that names none."""
    path = tokenizer_file(spec)
    if path is None:
        return None
    length = spec.options.get("max_length")
    if length is None and from_folder(spec):
        length = _folder_max_length(weights_dir(spec))
    return _load(path, length)


@functools.lru_cache(maxsize=16)
def _folder_max_length(folder: Path) -> int:
    """The length a folder's model truncates at, as the worker reads it (:mod:`batchery.models.folder`)."""
    return max_length(folder, read_json(folder / "config.json"))


@functools.lru_cache(maxsize=16)
def _load(path: Path, max_length: int | None) -> Tokens:
    return Tokens(path, max_length)
