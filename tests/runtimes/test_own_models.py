"""Your own models on both runtimes: tiny BERT folders of each task, served as the libraries that made them
answer (sentence-transformers for embeddings and cross-encoders, transformers for classifiers), to 1e-4."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.settings import Settings
from tests.tiny_models import PAIRS, TEXTS, max_difference, reference

TASKS = ["embedding", "classification", "cross-encoder"]


def spec_of(task: str, folder: Path, runtime: str) -> ModelSpec:
    return ModelSpec(name=f"tiny-{task}", runtime=runtime, path=str(folder), input="pair" if task == "cross-encoder" else "text",
                     options={"source": "hf", "task": task})


def served(spec: ModelSpec, settings: Settings, inputs: list) -> list:
    runtime = load_runtime(spec, "cpu", settings)
    try:
        return list(runtime.infer(runtime.prepare(runtime.preprocess(inputs))))
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def references(tiny_folders: dict[str, Path]) -> dict[str, list]:
    return {task: reference(task, tiny_folders[task], PAIRS if task == "cross-encoder" else TEXTS) for task in TASKS}


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("task", TASKS)
def test_each_task_answers_as_its_library_does(
    task: str, runtime: str, tiny_folders: dict[str, Path], references: dict[str, list], data_settings: Settings
) -> None:
    inputs = PAIRS if task == "cross-encoder" else TEXTS
    got = served(spec_of(task, tiny_folders[task], runtime), data_settings, inputs)
    assert max_difference(got, references[task]) <= 1e-4
    if task == "embedding":
        assert np.stack(got).shape == (len(TEXTS), 32)


def test_the_answers_tell_inputs_apart(references: dict[str, list]) -> None:
    """Random tiny weights could answer alike for every input, and a mix-up of items would go unseen."""
    vectors = np.stack(references["embedding"])
    assert (vectors @ vectors.T - np.eye(len(vectors))).max() < 0.99
    scores = references["cross-encoder"]
    assert max(scores) - min(scores) > 0.01
    assert len({tuple(r["scores"].values()) for r in references["classification"]}) == len(TEXTS)


def test_the_folders_pooling_is_used_not_a_default(tiny_folders: dict[str, Path], data_settings: Settings) -> None:
    """The embedding folder pools its CLS token; mean pooling, set against it, gives other vectors."""
    spec = spec_of("embedding", tiny_folders["embedding"], "onnx")
    mean = dataclasses.replace(spec, options={**spec.options, "pooling": "mean"})
    assert np.abs(np.stack(served(mean, data_settings, TEXTS)) - np.stack(served(spec, data_settings, TEXTS))).max() > 1e-2


def test_a_classifier_takes_pairs_too(tiny_folders: dict[str, Path], data_settings: Settings) -> None:
    """An NLI-style classifier: pairs in, label scores out, as transformers scores the pairs."""
    folder = tiny_folders["classification"]
    spec = dataclasses.replace(spec_of("classification", folder, "onnx"), input="pair")
    got = served(spec, data_settings, PAIRS)
    assert max_difference(got, reference("classification", folder, PAIRS)) <= 1e-4
    assert all(abs(sum(g["scores"].values()) - 1) < 1e-5 for g in got)
    swapped = served(spec, data_settings, [[b, a] for a, b in PAIRS])
    assert np.abs(np.array([list(s["scores"].values()) for s in swapped]) - [list(g["scores"].values()) for g in got]).max() > 1e-3
