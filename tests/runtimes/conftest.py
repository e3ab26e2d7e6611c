"""Fixtures for the runtime tests: texts of every length and the PyTorch reference's embeddings of them."""

from __future__ import annotations

import numpy as np
import pytest

from batchery.models import hf
from batchery.models.registry import ModelSpec
from batchery.runtimes.text import TextEncoder

LONG = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based inks and a wooden press adapted from those used to make wine. Before his "
    "invention, books were copied by hand, usually by monks working in scriptoria, and a single Bible could "
    "take a scribe more than a year to finish. The new machines spread quickly across Europe: by 1500, presses "
    "were running in more than two hundred cities, and they had produced millions of volumes on theology, law, "
    "medicine, astronomy and poetry. Cheaper books changed who could read and what they read. Scholars could "
    "compare identical copies of a text, which made it easier to correct errors and to build on the work of "
    "others, and some historians argue that this standardisation was essential to the scientific revolution. "
    "Printers also published pamphlets, calendars and news sheets, which carried arguments about religion and "
    "politics to people who had never owned a book. Governments and churches soon tried to control what could "
    "be printed, issuing licences and lists of forbidden titles, but the sheer number of presses made complete "
    "censorship impossible, and ideas continued to travel faster than the authorities could follow them."
)

#: Ten texts from one word to about two hundred, so one batch carries every amount of padding.
SENTENCES = [
    "Hello",
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar on stage.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Cats sleep for most of the day.",
    "My kitten naps in the sun all afternoon, curled up on the windowsill.",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a by-product.",
    " ".join(LONG.split()[:60]),
    " ".join(LONG.split()[:120]),
    LONG,
]


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def reference_embeddings(minilm_spec: ModelSpec, sentences: list[str]) -> np.ndarray:
    """The PyTorch model's embeddings of ``sentences``, pooled in torch: what every runtime must reproduce."""
    encoder = TextEncoder(hf.weights_dir(minilm_spec) / "tokenizer.json", minilm_spec.options["max_length"])
    return hf.reference_embeddings(hf.reference_model(minilm_spec), encoder.encode(sentences))
