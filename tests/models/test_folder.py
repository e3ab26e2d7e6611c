"""What a model folder says about serving it, read from its own files: pooling, normalisation, length, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchery.errors import ConfigError
from batchery.models.folder import folder_options, resolved
from batchery.models.registry import ModelSpec


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def st_folder(tmp_path: Path, pooling: dict, modules: tuple[str, ...] = ("Transformer", "Pooling", "Normalize")) -> Path:
    """A sentence-transformers layout in the older form of its files (the current form is the tiny folders')."""
    write(tmp_path / "config.json", {"model_type": "bert", "max_position_embeddings": 512})
    write(tmp_path / "sentence_bert_config.json", {"max_seq_length": 128})
    write(tmp_path / "tokenizer_config.json", {"model_max_length": 512})
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize", "Dense": "2_Dense"}
    write(tmp_path / "modules.json", [{"idx": i, "name": str(i), "path": paths[kind], "type": f"sentence_transformers.models.{kind}"}
                                      for i, kind in enumerate(modules)])
    write(tmp_path / "1_Pooling" / "config.json", pooling)
    return tmp_path


def test_the_older_pooling_flags_are_read(tmp_path: Path) -> None:
    flags = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    options = folder_options(st_folder(tmp_path, flags), "embedding")
    assert options == {"max_length": 128, "pooling": "mean", "normalize": True}


def test_a_plain_hugging_face_folder_is_mean_pooled_without_normalising(tmp_path: Path) -> None:
    write(tmp_path / "config.json", {"model_type": "bert", "max_position_embeddings": 64})
    write(tmp_path / "tokenizer_config.json", {"model_max_length": 1e30})
    assert folder_options(tmp_path, "embedding") == {"max_length": 64, "pooling": "mean", "normalize": False}


def test_positions_after_the_padding_id_are_not_counted(tmp_path: Path) -> None:
    write(tmp_path / "config.json", {"model_type": "xlm-roberta", "max_position_embeddings": 514})
    assert folder_options(tmp_path, "embedding")["max_length"] == 512


@pytest.mark.parametrize(
    "pooling, modules, fragment",
    [
        ({"pooling_mode": "max"}, ("Transformer", "Pooling"), "pooling ['max'] is not served"),
        ({"pooling_mode": ["mean", "cls"]}, ("Transformer", "Pooling"), "is not served"),
        ({"pooling_mode": "mean"}, ("Transformer", "Pooling", "Dense", "Normalize"), "the modules ['Dense'] are not served"),
        ({"pooling_mode": "mean"}, ("Transformer",), "has no Pooling module"),
    ],
)
def test_what_batchery_would_not_reproduce_is_refused(tmp_path: Path, pooling: dict, modules: tuple, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        folder_options(st_folder(tmp_path, pooling, modules), "embedding")


@pytest.mark.parametrize(
    "config, task, expected",
    [
        ({"id2label": {"0": "no", "1": "yes"}}, "classification", (["no", "yes"], "softmax")),
        ({"id2label": {"0": "a", "1": "b"}, "problem_type": "multi_label_classification"}, "classification", (["a", "b"], "sigmoid")),
        ({"num_labels": 1, "problem_type": "regression"}, "classification", (["LABEL_0"], "none")),
        ({"id2label": {"0": "LABEL_0"}}, "cross-encoder", (["LABEL_0"], "sigmoid")),
        ({"id2label": {"0": "c", "1": "e", "2": "n"}}, "cross-encoder", (["c", "e", "n"], "none")),
        ({"id2label": {"0": "s"}, "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}},
         "cross-encoder", (["s"], "none")),
    ],
)
def test_labels_and_activation_come_from_the_config(tmp_path: Path, config: dict, task: str, expected: tuple) -> None:
    write(tmp_path / "config.json", config)
    options = folder_options(tmp_path, task)
    assert (options["labels"], options["activation"]) == expected


def test_the_models_file_wins_over_the_folder(tiny_folders: dict[str, Path]) -> None:
    spec = ModelSpec(name="e", runtime="onnx", path=str(tiny_folders["embedding"]), options={"source": "hf", "normalize": False})
    assert resolved(spec).options == {"source": "hf", "normalize": False, "pooling": "cls", "max_length": 48}
    plain = ModelSpec(name="p", runtime="onnx", path="/x.onnx", options={"tokenizer": "/t.json"})
    assert resolved(plain) is plain


def test_a_folder_without_a_fast_tokenizer_says_how_to_write_one(tmp_path: Path) -> None:
    write(tmp_path / "config.json", {"model_type": "bert"})
    (tmp_path / "model.safetensors").write_bytes(b"")
    spec = ModelSpec(name="slow", runtime="onnx", path=str(tmp_path), options={"source": "hf"})
    with pytest.raises(ConfigError, match="has no tokenizer.json .*save_pretrained"):
        resolved(spec)
