"""Result files written from the store, with no worker: every item once, in order, exactly as Redis held it;
Redis's memory for the outputs given back; a finaliser killed mid-write taken over once its lease lapses."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from batchery import keys
from batchery.errors import DeadlineExceeded, ModelError
from batchery.results.formats import ResultsRequest
from batchery.results.writer import ResultWriter
from batchery.store import ItemResult, JobStore
from batchery.store.jobs import CANCEL_GRACE_S
from batchery.store.codec import encode_error, encode_output, result_record

DIMS = 16
TOTAL = 3000


def make_job(store: JobStore, total: int, formats: tuple[str, ...], **fields: object) -> str:
    job_id = uuid.uuid4().hex
    wanted = ResultsRequest(formats, DIMS).as_dict()
    store.create(job_id, {"model": "embed", "version": "1", "total": total, "results": wanted, **fields})
    return job_id


def item(job_id: str, index: int) -> ItemResult:
    """Most items a float32 vector of their own; some fail, some are float16, one is not a vector at all."""
    if index % 7 == 3:
        return ItemResult(job_id, index, encode_error(ModelError(f"item {index} failed")), False)
    if index % 11 == 5:
        return ItemResult(job_id, index, encode_error(DeadlineExceeded()), False)
    if index == 42:
        return ItemResult(job_id, index, encode_output({"not": "a vector"}), True)
    vector = np.random.default_rng(index).standard_normal(DIMS).astype(np.float32)
    if index % 13 == 0:
        vector = vector.astype(np.float16)
    return ItemResult(job_id, index, encode_output(vector), True)


def fill(store: JobStore, job_id: str, total: int) -> list[bytes]:
    stored = [item(job_id, i) for i in range(total)]
    store.record(stored)
    return [r.value for r in stored]


def shards_memory(store: JobStore, job_id: str, total: int) -> int:
    return sum(store.redis.memory_usage(keys.job_outputs(job_id, n)) or 0 for n in range(keys.shard(total - 1) + 1))


def read_file(files, found: dict) -> bytes:
    record = files.get(found["id"])
    assert record is not None and record["purpose"] == "job_results" and record["bytes"] == found["bytes"]
    return b"".join(files.blobs.chunks(record["blob"]))


def expected_npy(raws: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
    rows, rest = np.zeros((len(raws), DIMS), dtype=np.float32), []
    for index, raw in enumerate(raws):
        if raw[:1] in (b"f", b"h") and len(raw) - 1 == DIMS * (4 if raw[:1] == b"f" else 2):
            rows[index] = np.frombuffer(raw, dtype="<f4" if raw[:1] == b"f" else "<f2", offset=1)
        else:
            rest.append(orjson.dumps(result_record(index, raw), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    return rows, rest


def check_files(store: JobStore, files, job_id: str, raws: list[bytes]) -> None:
    job = store.get(job_id)
    assert job["results_state"] == "written"
    written = {f["kind"]: f for f in job["result_files"]}
    assert set(written) == {"results", "outputs", "errors"}
    lines = read_file(files, written["results"]).splitlines()
    assert [orjson.loads(line) for line in lines] == [as_json(result_record(i, raw)) for i, raw in enumerate(raws)]
    rows, rest = expected_npy(raws)
    array = np.load(io.BytesIO(read_file(files, written["outputs"])))
    assert array.dtype == np.float32 and array.shape == (len(raws), DIMS)
    assert np.array_equal(array, rows)
    errors = read_file(files, written["errors"])
    assert errors == b"".join(rest)
    failed = {orjson.loads(line)["index"] for line in errors.splitlines()}
    assert failed == {i for i, raw in enumerate(raws) if raw[:1] == b"e"} | {42}


def as_json(record: dict) -> object:
    return orjson.loads(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY))


def test_an_ended_job_s_files_hold_every_item_as_redis_held_it_and_its_outputs_leave_redis(
    own_store, files, own_settings
):
    job_id = make_job(own_store, TOTAL, ("jsonl", "npy"))
    raws = fill(own_store, job_id, TOTAL)
    assert own_store.get(job_id)["status"] == "completed"
    assert own_store.redis.zscore(keys.results_due(), job_id) is not None  # made due by the write that ended it
    held = shards_memory(own_store, job_id, TOTAL)
    assert held > TOTAL * DIMS * 2

    assert ResultWriter(own_store, files, own_settings).round() == 1

    check_files(own_store, files, job_id, raws)
    assert shards_memory(own_store, job_id, TOTAL) == 0
    assert not any(own_store.redis.exists(keys.job_outputs(job_id, n)) for n in range(keys.shard(TOTAL - 1) + 1))
    assert own_store.redis.zscore(keys.results_due(), job_id) is None
    assert not own_store.redis.exists(keys.job_finalizing(job_id))


def test_a_cancelled_job_s_files_wait_for_its_last_items_then_answer_the_unrun_ones_cancelled(
    own_store, files, own_settings
):
    job_id = make_job(own_store, 500, ("jsonl",))
    own_store.record([item(job_id, i) for i in range(200)])
    assert own_store.cancel(job_id) == "cancelled"
    assert ResultWriter(own_store, files, own_settings).round() == 0  # its last items may still land
    own_store.record([item(job_id, 250)])  # and one does
    after_grace = ResultWriter(own_store, files, own_settings, clock=lambda: time.time() + CANCEL_GRACE_S + 2)
    assert after_grace.round() == 1
    job = own_store.get(job_id)
    lines = [orjson.loads(line) for line in read_file(files, job["result_files"][0]).splitlines()]
    assert [line["index"] for line in lines] == list(range(500))
    assert lines[250] == as_json(result_record(250, item(job_id, 250).value))
    unrun = [line for line in lines[200:] if line["index"] != 250]
    assert all(line["error"]["code"] == "cancelled" for line in unrun)
    assert job["succeeded"] + job["failed"] == 201  # the items' counts stay the workers' to keep


def test_a_job_that_failed_whole_has_every_item_answered_job_failed(own_store, files, own_settings):
    job_id = make_job(own_store, 20, ("jsonl", "npy"))
    own_store.fail(job_id, "could not queue the job: the broker is down")
    assert ResultWriter(own_store, files, own_settings).round() == 1
    written = {f["kind"]: f for f in own_store.get(job_id)["result_files"]}
    errors = [orjson.loads(line) for line in read_file(files, written["errors"]).splitlines()]
    assert [e["index"] for e in errors] == list(range(20))
    assert {e["error"]["code"] for e in errors} == {"job_failed"} and "broker is down" in errors[0]["error"]["message"]
    assert not np.load(io.BytesIO(read_file(files, written["outputs"]))).any()


def test_a_job_without_results_is_never_watched_and_one_still_running_waits(own_store, files, own_settings):
    plain = uuid.uuid4().hex
    own_store.create(plain, {"model": "embed", "version": "1", "total": 2})
    own_store.record([item(plain, 0), item(plain, 1)])
    running = make_job(own_store, 10, ("jsonl",))
    own_store.record([item(running, 0)])
    writer = ResultWriter(own_store, files, own_settings, clock=lambda: time.time() + 60)  # past every look's time
    assert writer.round() == 0
    assert own_store.redis.zscore(keys.results_watch(), plain) is None
    assert own_store.redis.zscore(keys.results_watch(), running) > time.time() + 60
    assert own_store.get(running)["results_state"] == "pending"


WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from batchery.results.writer import ResultWriter
    from batchery.settings import Settings
    from batchery.store.files import Blobs, FileStore
    from batchery.store.jobs import JobStore

    pages = JobStore.iter_pages

    def slowly(self, *args, **kwargs):
        for number, page in enumerate(pages(self, *args, **kwargs)):
            yield page
            print(f"page {number} written", flush=True)
            time.sleep(30)

    def die(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[1] == "slowly":
        JobStore.iter_pages = slowly
    else:
        JobStore.release_outputs = die
    settings = Settings.from_env()
    store = settings.job_store()
    files = FileStore(store.redis, Blobs(settings.effective_files_url), settings.file_ttl_s)
    ResultWriter(store, files, settings).round()
    """
)


@pytest.mark.slow
def test_a_finaliser_killed_mid_write_commits_nothing_and_another_takes_over_once_its_lease_lapses(
    own_store, files, own_settings
):
    job_id = make_job(own_store, TOTAL, ("jsonl", "npy"))
    raws = fill(own_store, job_id, TOTAL)
    env = {**os.environ, **own_settings.as_env()}
    argv = [sys.executable, "-c", WRITER, "slowly"]
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert child.stdout.readline() == b"page 0 written\n", child.stdout.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lease = keys.job_finalizing(job_id)
    assert own_store.redis.ttl(lease) > 0
    partial = list((Path(own_settings.effective_files_url) / "jobs" / job_id).rglob("*.partial-*"))
    assert partial, "the killed writer was writing"
    job = own_store.get(job_id)
    assert job["results_state"] == "pending" and job["result_files"] is None

    later = ResultWriter(own_store, files, own_settings, clock=lambda: time.time() + keys.FINALIZE_LEASE_S + 1)
    assert later.round() == 0  # the dead writer's lease is still held: nothing is written over it
    assert own_store.get(job_id)["results_state"] == "pending"
    own_store.redis.pexpire(lease, 1)  # the lease lapses, as it would FINALIZE_LEASE_S after the last renewal
    time.sleep(0.01)
    much_later = ResultWriter(own_store, files, own_settings, clock=lambda: time.time() + keys.FINALIZE_LEASE_S + 5)
    assert much_later.round() == 1
    check_files(own_store, files, job_id, raws)
    listed, _ = files.list(None, None, 10_000, purpose="job_results")
    assert not any(".partial-" in f["blob"] for f in listed)  # what the dead writer left never became a file


def test_a_finaliser_that_died_between_its_commit_and_releasing_the_outputs_is_finished_by_the_next(
    own_store, files, own_settings
):
    job_id = make_job(own_store, 100, ("jsonl",))
    fill(own_store, job_id, 100)
    env = {**os.environ, **own_settings.as_env()}
    died = subprocess.run([sys.executable, "-c", WRITER, "dies"], env=env, capture_output=True, timeout=60)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    job = own_store.get(job_id)
    assert job["results_state"] == "written" and job["outputs_released_at"] is None
    assert own_store.redis.exists(keys.job_outputs(job_id, 0))
    later = ResultWriter(own_store, files, own_settings, clock=lambda: time.time() + keys.FINALIZE_LEASE_S + 1)
    assert later.round() == 0  # nothing to write: the files are the job's already
    assert not own_store.redis.exists(keys.job_outputs(job_id, 0))
    assert own_store.redis.zscore(keys.results_due(), job_id) is None
    assert own_store.get(job_id)["result_files"] == job["result_files"]
