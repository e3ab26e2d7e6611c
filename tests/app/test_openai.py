"""OpenAI's own Python SDK against batchery, unchanged but for its ``base_url``: embeddings, files and batches.

``minilm`` is the real model (the session's minilm worker). The batches at size run on ``echo-embed``, a
synthetic text model whose output for each text is a vector made from that text alone
(:func:`batchery.runtimes.echo.synthetic_vector`): minilm on two shared cores would take minutes for 50,000
texts, and a vector that depends on its own text proves each answer went to its own ``custom_id``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import textwrap
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import openai
import orjson
import pytest
from tokenizers import Tokenizer

from batchery import keys
from batchery.models import hf
from batchery.models.registry import BUILTINS
from batchery.runtimes.echo import synthetic_vector
from batchery.settings import Settings
from tests.conftest import MODELS_TOML, ApiServer, WorkerProcess

DIMS = 8
SENTENCES = ["A cat sat on the mat.", "Stocks fell sharply after the central bank raised interest rates.", "short"]


def models_toml() -> str:
    tokenizer = hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json"
    return MODELS_TOML + textwrap.dedent(
        f"""
        [models.echo-embed]
        runtime = "echo"
        input = "text"
        max_batch_size = 256
        max_wait_ms = 1
        description = "synthetic: a vector per text, made from the text"
        [models.echo-embed.options]
        vector_dims = {DIMS}
        dimensions = {DIMS}
        tokenizer = "{tokenizer}"
        max_length = 256

        [models.echo-embed-slow]
        runtime = "echo"
        input = "text"
        max_batch_size = 8
        max_wait_ms = 1
        description = "synthetic: as echo-embed, at 25 ms a batch of 8"
        [models.echo-embed-slow.options]
        vector_dims = {DIMS}
        dimensions = {DIMS}
        batch_latency_ms = 25
        """
    )


@pytest.fixture(scope="module")
def oai_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("openai")
    (folder / "models.toml").write_text(models_toml())
    return dataclasses.replace(
        settings, models_file=str(folder / "models.toml"), files_url=str(folder / "files"), max_items_per_job=50_000
    )


@pytest.fixture(scope="module")
def embed_worker(oai_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("openai-worker") / "worker.log"
    worker = WorkerProcess(oai_settings, ["echo-embed", "echo-embed-slow"], "embed", log).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def oai_api(oai_settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(oai_settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(oai_api: ApiServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{oai_api.url}/v1", api_key="unused: keys are off", max_retries=0)


def tokenizer() -> Tokenizer:
    found = Tokenizer.from_file(str(hf.weights_dir(BUILTINS["minilm"]) / "tokenizer.json"))
    found.no_padding()
    found.enable_truncation(256)
    return found


def wait_for_batch(client: openai.OpenAI, batch_id: str, timeout_s: float = 180) -> openai.types.Batch:
    deadline = time.monotonic() + timeout_s
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    return batch


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()]


def upload(client: openai.OpenAI, lines: list[bytes], name: str = "in.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(b"\n".join(lines) + b"\n")), purpose="batch").id


def request_line(custom_id: str, model: str, texts: object, **body: object) -> bytes:
    return orjson.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": model, "input": texts, **body},
        }
    )


@pytest.mark.usefixtures("minilm_worker")
def test_embeddings_equal_predict_in_float_and_base64_and_count_real_tokens(client, oai_api, http):
    floats = client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float")
    as_base64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES, encoding_format="base64")
    decoded_by_sdk = client.embeddings.create(model="minilm", input=SENTENCES)  # the SDK asks for base64 and decodes
    predicted = http.post(f"{oai_api.url}/v1/models/minilm/predict", json={"inputs": SENTENCES}).json()["outputs"]
    vectors = np.array([d.embedding for d in floats.data], dtype=np.float32)
    raw = np.array([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in as_base64.data])
    assert vectors.shape == (3, 384) and [d.index for d in floats.data] == [0, 1, 2]
    assert np.array_equal(vectors, np.array(predicted, dtype=np.float32)), "the same texts give predict's vectors"
    assert np.array_equal(raw, vectors) and np.array_equal(
        np.array([d.embedding for d in decoded_by_sdk.data], dtype=np.float32), vectors
    )
    tokens = sum(len(e.ids) for e in tokenizer().encode_batch(SENTENCES))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    assert floats.model == "minilm@l6-v2" and floats.object == "list"


@pytest.mark.usefixtures("minilm_worker")
def test_token_arrays_are_read_with_the_model_s_tokenizer(client):
    ids = [e.ids for e in tokenizer().encode_batch(SENTENCES[:2], add_special_tokens=False)]
    from_ids = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    from_text = client.embeddings.create(
        model="minilm", input=[s.lower() for s in SENTENCES[:2]], encoding_format="float"
    )
    assert np.allclose([d.embedding for d in from_ids.data], [d.embedding for d in from_text.data], atol=1e-6)
    one = client.embeddings.create(model="minilm", input=ids[0], encoding_format="float")
    assert len(one.data) == 1 and np.allclose(one.data[0].embedding, from_ids.data[0].embedding, atol=1e-6)


@pytest.mark.usefixtures("embed_worker")
def test_errors_are_in_openai_s_shape(client, oai_api, http):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="echo-embed", input="x", dimensions=3)
    assert caught.value.body["param"] == "dimensions" and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="no-such-model", input="x")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        client.embeddings.create(model="echo", input="x")
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.embeddings.create(model="echo-embed", input=[[10**9]])
    answer = http.post(f"{oai_api.url}/v1/embeddings", json={"model": "echo-embed", "input": []})
    assert answer.status_code == 400 and set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert client.embeddings.create(model="echo-embed", input="x", dimensions=DIMS).data[0].embedding == pytest.approx(
        synthetic_vector("x", DIMS).tolist()
    )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("not-a-file")


def test_files_upload_read_list_delete(client):
    body = b"".join(request_line(f"r{i}", "echo-embed", f"text {i}") + b"\n" for i in range(100))
    made = client.files.create(file=("in.jsonl", io.BytesIO(body)), purpose="batch")
    assert made.bytes == len(body) and made.purpose == "batch" and made.filename == "in.jsonl"
    assert client.files.retrieve(made.id).bytes == len(body)
    assert client.files.content(made.id).content == body
    assert made.id in [f.id for f in client.files.list()]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", io.BytesIO(body)), purpose="fine-tune")
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)


@pytest.mark.slow
@pytest.mark.usefixtures("embed_worker")
def test_a_50000_input_batch_answers_every_custom_id_exactly_once(client, oai_api, http):
    lines, texts = [], {}
    for i in range(35_000):
        inputs = [f"line {i} text {k}" for k in range(1 if i % 7 else 4)]  # one line in seven holds four texts
        texts[f"req-{i}"] = inputs
        lines.append(
            request_line(
                f"req-{i}",
                "echo-embed",
                inputs if len(inputs) > 1 else inputs[0],
                encoding_format="base64" if i % 5 == 0 else "float",
            )
        )
    assert sum(map(len, texts.values())) == 50_000
    broken = {
        5: b"{not json",
        6: request_line("req-bad-url", "echo-embed", "x").replace(b"/v1/embeddings", b"/v1/chat"),
        20: request_line("req-5", "echo-embed", "duplicate custom_id"),
    }
    for at, line in sorted(broken.items()):
        lines.insert(at, line)
    started = time.monotonic()
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "50k"}
    )
    assert batch.status == "in_progress" and batch.request_counts.total == len(lines)
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (6, "invalid_json"),
        (7, "invalid_url"),
        (21, "duplicate_custom_id"),
    ]
    job = http.get(f"{oai_api.url}/v1/jobs/{batch.model_extra['job_id']}").json()
    assert (
        job["tier"] == "bulk"
        and job["metadata"] == {"batch_id": batch.id}
        and job["total"] == sum(map(len, texts.values()))
    )
    done = wait_for_batch(client, batch.id, timeout_s=600)
    elapsed = time.monotonic() - started
    assert done.status == "completed", done
    assert done.request_counts.model_dump() == {"total": len(lines), "completed": len(texts), "failed": 3}
    outputs, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    answered = [o["custom_id"] for o in outputs]
    assert sorted(answered) == sorted(texts) and len(set(answered)) == len(answered), "every custom_id exactly once"
    assert [e["error"]["code"] for e in errors] == ["invalid_json", "invalid_url", "duplicate_custom_id"]
    for record in outputs:
        body = record["response"]["body"]
        assert record["response"]["status_code"] == 200 and record["error"] is None
        got = [
            np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
            if isinstance(d["embedding"], str)
            else np.array(d["embedding"], dtype=np.float32)
            for d in body["data"]
        ]
        want = [synthetic_vector(text, DIMS) for text in texts[record["custom_id"]]]
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want)), record["custom_id"]
        assert body["usage"]["prompt_tokens"] > 0
    print(f"\n50,000-input batch: {elapsed:.1f} s from create to completed")


@pytest.mark.usefixtures("embed_worker")
def test_cancelling_a_running_batch_keeps_its_partial_results(client, oai_api, http):
    lines = [request_line(f"c{i}", "echo-embed-slow", f"slow text {i}") for i in range(3000)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    job_url = f"{oai_api.url}/v1/jobs/{batch.model_extra['job_id']}"
    deadline = time.monotonic() + 60
    while http.get(job_url).json()["counts"]["succeeded"] < 100:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_for_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    outputs, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert len(outputs) >= 100 and len(outputs) + len(errors) == 3000
    assert done.request_counts.completed == len(outputs) and done.request_counts.failed == len(errors)
    assert sorted(o["custom_id"] for o in outputs + errors) == sorted(f"c{i}" for i in range(3000))
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    for record in outputs:
        text = f"slow text {record['custom_id'][1:]}"
        assert np.array_equal(
            np.array(record["response"]["body"]["data"][0]["embedding"], dtype=np.float32), synthetic_vector(text, DIMS)
        )


@pytest.mark.usefixtures("embed_worker")
def test_batches_list_newest_first_with_after_and_limit(client):
    file_id = upload(client, [request_line("only", "echo-embed", "one text")])
    made = [
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h").id
        for _ in range(3)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == made[0]
    assert {b.id for b in client.batches.list(limit=100)} >= set(made)
    done = wait_for_batch(client, made[0])
    assert done.status == "completed" and lines_of(client, done.output_file_id)[0]["custom_id"] == "only"


@pytest.mark.usefixtures("embed_worker")
def test_a_batch_whose_lines_all_fail_fails_and_says_why(client):
    file_id = upload(client, [b"[1, 2]", request_line("x", "echo-embed", "t", dimensions=3)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    assert [(e.line, e.code, e.param) for e in batch.errors.data[:2]] == [
        (1, "invalid_request", None),
        (2, "bad_request", "body.dimensions"),
    ]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")


@pytest.mark.usefixtures("embed_worker")
def test_a_finalizer_that_died_commits_nothing_and_the_next_look_writes_the_files(client, oai_settings, redis_client):
    """While the lease of a process that died half-way through the files is held (here by no one), the batch is
    ``finalizing`` with no file, and a half-written blob it left is never a file; once the lease lapses, the next
    look writes the files."""
    lines = [request_line(f"f{i}", "echo-embed-slow", f"crash text {i}") for i in range(50)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    redis_client.set(keys.batch_finalizing(batch.id), "a process that died")
    half = Path(oai_settings.files_url) / "batches" / batch.id / "output.jsonl.partial-dead"
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_bytes(b'{"custom_id": "f0", "response": ')
    deadline = time.monotonic() + 30
    while (seen := client.batches.retrieve(batch.id)).status != "finalizing":
        assert seen.status == "in_progress" and time.monotonic() < deadline, seen
        time.sleep(0.1)
    time.sleep(0.5)
    seen = client.batches.retrieve(batch.id)
    assert seen.status == "finalizing" and seen.output_file_id is None and seen.completed_at is None
    redis_client.delete(keys.batch_finalizing(batch.id))  # the dead process's lease lapses
    done = wait_for_batch(client, batch.id, timeout_s=30)
    assert done.status == "completed" and done.request_counts.completed == 50
    assert sorted(o["custom_id"] for o in lines_of(client, done.output_file_id)) == sorted(f"f{i}" for i in range(50))
    assert done.error_file_id is None and not redis_client.exists(keys.batch_finalizing(batch.id))
    shard = keys.job_outputs(done.model_extra["job_id"], 0)  # in the file now: it leaves Redis, as a job's do
    assert 0 < redis_client.ttl(shard) <= oai_settings.result_files_keep_s
    assert list((Path(oai_settings.files_url) / "batches" / batch.id).glob("*/output.jsonl"))  # the attempt's folder


@pytest.mark.usefixtures("embed_worker")
def test_a_batch_past_its_completion_window_expires_with_what_it_finished(client, oai_api, http, store, redis_client):
    lines = [request_line(f"e{i}", "echo-embed-slow", f"late text {i}") for i in range(2000)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    job_id = batch.model_extra["job_id"]
    assert batch.expires_at - batch.created_at == 24 * 3600
    deadline = time.monotonic() + 60
    while store.get(job_id)["succeeded"] < 50:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    redis_client.hset(keys.job(job_id), "deadline", time.time() - 1)  # the window passes (its job's deadline)
    done = wait_for_batch(client, batch.id)
    assert done.status == "expired" and done.expired_at
    outputs, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert len(outputs) >= 50 and len(outputs) + len(errors) == 2000
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


KEYS_FILE = "alice-openai-key name=alice\nbob-openai-key name=bob\n"


@pytest.fixture(scope="module")
def keyed(oai_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    keys_file = tmp_path_factory.mktemp("openai-keys") / "keys"
    keys_file.write_text(KEYS_FILE)
    with ApiServer(dataclasses.replace(oai_settings, api_keys_file=str(keys_file))) as server:
        yield server


@pytest.mark.usefixtures("embed_worker")
def test_api_keys_are_bearer_tokens_and_files_and_batches_are_their_owner_s(keyed, http):
    alice = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="alice-openai-key", max_retries=0)
    bob = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="bob-openai-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="no-such-key", max_retries=0).embeddings.create(
            model="echo-embed", input="x"
        )
    assert caught.value.body["code"] == "unauthorized" and caught.value.body["type"] == "authentication_error"
    assert len(alice.embeddings.create(model="echo-embed", input=["a", "b"]).data) == 2
    file_id = upload(alice, [request_line("mine", "echo-embed", "alice's text")])
    batch = alice.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    job = http.get(
        f"{keyed.url}/v1/jobs/{batch.model_extra['job_id']}", headers={"Authorization": "Bearer alice-openai-key"}
    ).json()
    assert job["owner"] == "alice" and job["tier"] == "bulk"
    for attempt in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(file_id),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert file_id not in [f.id for f in bob.files.list()] and batch.id not in [b.id for b in bob.batches.list()]
    done = wait_for_batch(alice, batch.id)
    assert done.status == "completed" and alice.files.retrieve(done.output_file_id).purpose == "batch_output"
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)


UPLOAD_CLIENT = textwrap.dedent(
    """
    import http.client, sys, urllib.parse

    url, blocks = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
    boundary, block = "batchery-test-boundary", bytes(range(256)) * 256
    head = (f'--{boundary}\\r\\nContent-Disposition: form-data; name="purpose"\\r\\n\\r\\nbatch\\r\\n'
            f'--{boundary}\\r\\nContent-Disposition: form-data; name="file"; filename="big"\\r\\n\\r\\n').encode()
    tail = f"\\r\\n--{boundary}--\\r\\n".encode()
    connection = http.client.HTTPConnection(url.hostname, url.port)
    connection.putrequest("POST", url.path)
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + blocks * len(block) + len(tail)))
    connection.endheaders(head)
    try:
        for _ in range(blocks):
            connection.send(block)
        connection.send(tail)
    except OSError:  # refused part-way (413): the answer is still there to read
        pass
    answer = connection.getresponse()
    print(answer.status, answer.read().decode())
    """
)
UPLOAD_PROBE = textwrap.dedent(
    """
    import json, subprocess, sys, tracemalloc
    from batchery.settings import Settings
    from tests.conftest import ApiServer

    with ApiServer(Settings.from_env()) as api:
        tracemalloc.start()
        client = [sys.executable, "-c", sys.argv[1], f"{api.url}/v1/files", sys.argv[2]]
        sent = subprocess.run(client, capture_output=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        status, _, answer = sent.stdout.decode().partition(" ")
        print(json.dumps({"status": int(status), "answer": json.loads(answer), "peak": peak}))
    """
)


def upload_in_a_process_of_its_own(settings: Settings, blocks: int) -> dict:
    """64 KiB blocks sent one at a time (with a ``Content-Length``, as httpx sends an upload) by a client process to
    an API in a process of its own, whose allocations meanwhile are traced: nothing else runs there, so its peak is
    what the upload cost the API."""
    env = {**os.environ, **settings.as_env()}
    argv = [sys.executable, "-c", UPLOAD_PROBE, UPLOAD_CLIENT, str(blocks)]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout.splitlines()[-1])


def test_an_upload_is_streamed_to_the_store_never_held_whole(oai_settings, http):
    """What an upload costs the API does not grow with it: 64 MiB (32 times the API's body limit for JSON) takes no
    more memory at once than 16 MiB, and the store has it whole. Past BATCHERY_MAX_FILE_BYTES, a 413."""
    small, large = (upload_in_a_process_of_its_own(oai_settings, blocks) for blocks in (256, 1024))
    assert small["status"] == large["status"] == 200 and large["answer"]["bytes"] == 64 * 2**20
    assert large["peak"] - small["peak"] < 2**20 and large["peak"] < 16 * 2**20, (small["peak"], large["peak"])
    print(f"\nthe API's peak: {small['peak'] / 2**20:.2f} MiB for 16 MiB, {large['peak'] / 2**20:.2f} MiB for 64 MiB")
    with ApiServer(oai_settings) as api:
        stored = http.get(f"{api.url}/v1/files/{large['answer']['id']}/content").content
    assert len(stored) == 64 * 2**20 and stored[:65536] == bytes(range(256)) * 256
    refused = upload_in_a_process_of_its_own(dataclasses.replace(oai_settings, max_file_bytes=16 * 65536), 17)
    assert refused["status"] == 413 and refused["answer"]["error"]["code"] == "request_entity_too_large"
