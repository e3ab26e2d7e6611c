"""Tiny BERT folders made in the test itself, as a user's own model would be laid out: random weights saved with
``save_pretrained`` beside a WordPiece tokenizer built from a vocabulary written here. Nothing is downloaded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "a the cat dog sat on mat rug kitten stocks fell rates rose river valley bank money water flour egg recipe "
    "two cups and is was of to in it by sun hello world good bad fine query passage answer question what where"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = ["a cat sat on the mat", "hello", "stocks fell, and rates rose by the bank of the river valley", "dog?"]
PAIRS = [
    ["what is a cat", "a cat sat on the mat"],
    ["hello", "world"],
    ["where is the bank", "by the river valley the water rose and the bank fell in"],
    ["a", "the egg and two cups of flour"],
]

MODELS_TOML = """
[models.tiny-embed]
runtime = "onnx"
path = "{embedding}"
max_wait_ms = 1
[models.tiny-embed.options]
source = "hf"

[models.tiny-classify]
runtime = "onnx"
path = "{classification}"
max_wait_ms = 1
[models.tiny-classify.options]
source = "hf"
task = "classification"

[models.tiny-rerank]
runtime = "onnx"
path = "{cross-encoder}"
max_wait_ms = 1
[models.tiny-rerank.options]
source = "hf"
task = "cross-encoder"
"""


def build_all(root: Path) -> dict[str, Path]:
    """One folder per task under ``root``: ``embedding``, ``classification`` and ``cross-encoder``."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "embedding": embedding_folder(root / "embedding"),
        "classification": classifier_folder(root / "classification"),
        "cross-encoder": classifier_folder(root / "cross-encoder", {0: "LABEL_0"}),
    }


def models_toml(folders: dict[str, Path]) -> str:
    """A models file serving the three folders (as tiny-embed, tiny-classify and tiny-rerank) on ONNX Runtime."""
    text = MODELS_TOML
    for task, folder in folders.items():
        text = text.replace("{" + task + "}", str(folder))
    return text


def write_vocab(folder: Path) -> Path:
    """Special tokens, the words, their letters and the letters as word pieces: any lowercase text tokenises."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,?!'-")
    pieces = [f"##{c}" for c in letters]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(dict.fromkeys([*SPECIAL, *WORDS, *letters, *pieces])) + "\n")
    return vocab


def config(**changes: object):
    from transformers import BertConfig

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64, type_vocab_size=2, initializer_range=0.3)
    return BertConfig(vocab_size=len(_vocab_lines()), **{**sizes, **changes})


def _vocab_lines() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return write_vocab(Path(scratch)).read_text().split()


def save_tokenizer(folder: Path) -> None:
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab_file=str(write_vocab(folder)), do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(str(folder))


def embedding_folder(folder: Path, pooling: str = "cls", normalize: bool = True) -> Path:
    """A sentence-transformers folder: BERT, then its pooling (CLS by default: not what batchery assumes), then
    Normalize."""
    import torch
    from transformers import BertModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        from sentence_transformers import SentenceTransformer, models

        torch.manual_seed(0)
        bert_folder = folder.with_name(folder.name + "-bert")
        BertModel(config()).save_pretrained(str(bert_folder))
        save_tokenizer(bert_folder)
        transformer = models.Transformer(str(bert_folder), max_seq_length=48)
        modules = [transformer, models.Pooling(config().hidden_size, pooling)]
        if normalize:
            modules.append(models.Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def classifier_folder(folder: Path, labels: dict[int, str] | None = None) -> Path:
    """A sequence classifier; with one label, a cross-encoder's layout."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    labels = LABELS if labels is None else labels
    names = dict(id2label=labels, label2id={v: k for k, v in labels.items()}, num_labels=len(labels))
    BertForSequenceClassification(config(**names)).save_pretrained(str(folder))
    save_tokenizer(folder)
    return folder


def reference(task: str, folder: Path, inputs: list) -> list:
    """What the libraries themselves answer, as batchery should: sentence-transformers' embeddings and
    cross-encoder scores, and a transformers classifier's softmax named by its id2label."""
    import numpy as np

    if task == "embedding":
        from sentence_transformers import SentenceTransformer

        return list(SentenceTransformer(str(folder), device="cpu").encode(inputs))
    if task == "cross-encoder":
        from sentence_transformers import CrossEncoder

        return [float(x) for x in CrossEncoder(str(folder), device="cpu").predict([tuple(p) for p in inputs])]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    texts = [inputs] if isinstance(inputs[0], str) else [[a for a, _ in inputs], [b for _, b in inputs]]
    batch = tokenizer(*texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        scores = torch.softmax(model(**batch).logits, dim=-1).numpy()
    names = [model.config.id2label[i] for i in range(scores.shape[1])]
    return [{"label": names[int(np.argmax(row))], "scores": dict(zip(names, map(float, row)))} for row in scores]


def max_difference(got: list, expected: list) -> float:
    """The largest difference between two lists of outputs of one task (vectors, label scores or scores)."""
    import numpy as np

    assert len(got) == len(expected)
    if isinstance(expected[0], dict):
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        assert all(list(g["scores"]) == list(e["scores"]) for g, e in zip(got, expected))
        got = [list(g["scores"].values()) for g in got]
        expected = [list(e["scores"].values()) for e in expected]
    return float(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(expected, dtype=np.float64)).max())
