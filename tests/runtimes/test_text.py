"""Host-side text handling: the encoder pads in numpy exactly as the tokenizer's own padding would."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from batchery.models import hf
from batchery.models.registry import ModelSpec
from batchery.runtimes.text import TextEncoder


@pytest.fixture(scope="module")
def tokenizer_path(minilm_spec: ModelSpec):
    return hf.weights_dir(minilm_spec) / "tokenizer.json"


def test_the_encoder_pads_as_the_tokenizer_does(tokenizer_path, sentences: list[str]) -> None:
    texts = [*sentences, "", "[PAD] is a token too", "two\nlines", " ".join(sentences[-2:])]
    padded = Tokenizer.from_file(str(tokenizer_path))
    padded.no_padding()
    padded.enable_padding(pad_id=0, pad_token="[PAD]")
    padded.enable_truncation(256)
    expected = padded.encode_batch(texts)

    got = TextEncoder(tokenizer_path, 256).encode(texts)

    for name, attribute in [("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")]:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], np.array([getattr(e, attribute) for e in expected]), err_msg=name)
    assert got["input_ids"].shape[1] == 256  # the longest text was cut at max_length, and the batch padded to it


def test_an_empty_batch_encodes_to_empty_arrays(tokenizer_path) -> None:
    got = TextEncoder(tokenizer_path, 256).encode([])
    assert {name: a.shape for name, a in got.items()} == {name: (0, 0) for name in got}
