"""`batchery models check`: every model loaded and run once before deploying, one line per model, exit 1 if any
model failed; no Redis, no worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from batchery.settings import Settings

MODELS = """
[models.tiny-embed]
runtime = "onnx"
path = "{embedding}"
options = {{source = "hf"}}

[models.broken]
runtime = "onnx"
path = "{slow_tokenizer}"
options = {{source = "hf", task = "classification"}}

[models.elsewhere]
runtime = "echo"
input = "json"
devices = ["cuda"]

[models.minilm]
enabled = false
[models.echo]
enabled = false
"""


def check(models_file: Path, data_settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BATCHERY_DATA_DIR": data_settings.data_dir, "BATCHERY_REDIS_URL": "redis://127.0.0.1:1/0"}
    argv = [sys.executable, "-m", "batchery", "models", "check", "--models-file", str(models_file), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def test_one_good_and_one_broken_model(tiny_folders: dict[str, Path], data_settings: Settings, tmp_path: Path) -> None:
    slow = tmp_path / "slow-tokenizer"  # the folder as saved with a slow tokenizer: vocab.txt, no tokenizer.json
    slow.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"):
        (slow / name).symlink_to(tiny_folders["classification"] / name)
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS.format(embedding=tiny_folders["embedding"], slow_tokenizer=slow))
    done = check(models_file, data_settings)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "OK    tiny-embed@1 on cpu: onnx, " + done.stdout.split("onnx, ", 1)[1].split("\n")[0],
        f"FAIL  broken@1 on cpu: cannot load: model 'broken': {slow} has no tokenizer.json (a fast tokenizer's file: "
        "write it with transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(folder))",
        "SKIP  elsewhere@1 on cpu: placed on ['cuda'] only: pass --device to check it there",
    ]
    assert "answers 32-dimensional float32 vectors" in done.stdout
    assert done.stderr.splitlines()[-1] == "Error: 1 of 3 models failed the check: broken"
    assert "Traceback" not in done.stderr

    only_good = check(models_file, data_settings, "--models", "tiny-embed")
    assert only_good.returncode == 0 and only_good.stdout.startswith("OK    tiny-embed@1 on cpu"), only_good.stderr


def test_a_models_file_that_does_not_read_is_one_line(tmp_path: Path, data_settings: Settings) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text('[models.x]\nruntime = "onnx"\noptions = {task = "ner"}\n')
    done = check(models_file, data_settings)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith("Error: model 'x': task must be one of")
