"""`batchery submit` on a file, against the API over HTTP."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid

import orjson
import pytest

from tests.conftest import ApiServer

pytestmark = pytest.mark.usefixtures("echo_worker")


def test_submit_writes_one_line_per_input_line_in_order(api, tmp_path, settings):
    inputs = [{"n": i, "text": f"line {i}"} for i in range(1500)]
    source = tmp_path / "inputs.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(v) for v in inputs) + b"\n")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "batchery", "submit", str(source), "--model", "echo", "-o", str(out), "--url", api.url, "--lines-per-job", "600"],
        capture_output=True, text=True, timeout=120, env={**settings.as_env(), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "1500 succeeded, 0 failed of 1500" in done.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert lines == [{"index": i, "output": v} for i, v in enumerate(inputs)]


def test_submit_reports_a_bad_line_clearly(api, tmp_path, settings):
    source = tmp_path / "bad.jsonl"
    source.write_text('"fine"\n{broken\n')
    done = subprocess.run(
        [sys.executable, "-m", "batchery", "submit", str(source), "--model", "echo", "--url", api.url, "--quiet"],
        capture_output=True, text=True, timeout=60, env={**settings.as_env(), "PATH": ""},
    )
    assert done.returncode != 0
    assert "HTTP 400" in done.stderr and "line 2" in done.stderr


def test_submit_sends_the_api_key_from_the_environment(tmp_path, settings):
    source = tmp_path / "inputs.jsonl"
    source.write_text('"a"\n"b"\n')
    argv = [sys.executable, "-m", "batchery", "submit", str(source), "--model", "echo", "--quiet"]
    with ApiServer(dataclasses.replace(settings, api_keys="submit-key-1")) as keyed:
        env = {**settings.as_env(), "PATH": ""}
        refused = subprocess.run([*argv, "--url", keyed.url], capture_output=True, text=True, timeout=60, env=env)
        assert refused.returncode != 0 and "HTTP 401" in refused.stderr and "submit-key-1" not in refused.stderr
        env["BATCHERY_API_KEY"] = "submit-key-1"
        done = subprocess.run([*argv, "--url", keyed.url], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == [{"index": 0, "output": "a"}, {"index": 1, "output": "b"}]


def test_progress_is_one_line_when_stderr_is_no_terminal(api, tmp_path, settings):
    """A bar redrawn with carriage returns is noise in a log file or CI: without a terminal, one line at the end."""
    text = f"a line of text {uuid.uuid4().hex}"  # no other test's: the result cache stays out of it
    source = tmp_path / "texts.txt"
    source.write_text(f"{text}\n{{not json}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "batchery", "submit", str(source), "--model", "echo", "--text", "--url", api.url],
        capture_output=True, text=True, timeout=60, env={**settings.as_env(), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "items done in" in line][0].startswith("2/2 items done in")
    assert len(done.stderr.splitlines()) == 2, done.stderr
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == [
        {"index": 0, "output": text}, {"index": 1, "output": "{not json}"}
    ], "--text: each line is one text, JSON-looking or not"
