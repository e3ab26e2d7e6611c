"""The export recipe and the text-model example of docs/models.md, run as written on a tiny model: the graph
they make keeps to the contract, and the runtime serves it as the folder's own PyTorch model answers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np

from batchery.models import hf
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import load_runtime
from batchery.runtimes.text import TextEncoder
from batchery.settings import Settings
from tests.tiny_models import TEXTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def block(heading: str, language: str) -> str:
    """The first code block of ``language`` after ``heading`` in docs/models.md."""
    after = DOC.read_text().split(heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", after, re.S).group(1)


def test_the_recipe_makes_a_graph_that_is_served_as_pytorch_answers(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    folder, out = tiny_folders["embedding"], tmp_path / "my-bert-onnx"
    recipe = block("### An export recipe", "python")
    recipe = recipe.replace('"/models/my-bert-onnx"', repr(str(out))).replace('"/models/my-bert"', repr(str(folder)))
    exec(compile(recipe, str(DOC), "exec"), {"__name__": "recipe"})
    example = block("### A text model of your own", "toml").replace("/models/my-bert-onnx", str(out))
    table = tomllib.loads(example)["models"]["my-bert"]
    spec = ModelSpec(name="my-bert", **table)
    runtime = load_runtime(spec, "cpu", Settings(data_dir=str(tmp_path / "data")))
    got = np.stack(runtime.infer(runtime.prepare(runtime.preprocess(TEXTS))))
    reference = hf.reference_model(ModelSpec(name="ref", runtime="torch", path=str(folder), options={"source": "hf"}))
    batch = TextEncoder(out / "tokenizer.json", table["options"]["max_length"]).encode(TEXTS)
    assert np.abs(got - hf.reference_embeddings(reference, batch, pooling="mean", normalize=True)).max() <= 1e-4
