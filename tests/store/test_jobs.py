"""The job store against a real Redis: idempotent recording and exact completion."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import redis

from batchery import keys
from batchery.errors import ModelError
from batchery.store import ItemResult, JobStore
from batchery.store.jobs import record_args
from batchery.store.codec import decode, encode_error, encode_output


@pytest.fixture
def job_id(store) -> str:
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 4})
    return job_id


def ok(job_id: str, index: int) -> ItemResult:
    return ItemResult(job_id, index, encode_output(index * 10), True)


def test_recording_twice_counts_once(store, job_id):
    assert store.record([ok(job_id, 0), ok(job_id, 1)]) == {job_id: (2, 0)}
    assert store.record([ok(job_id, 0), ok(job_id, 1)]) == {job_id: (0, 0)}
    job = store.get(job_id)
    assert (job["succeeded"], job["failed"], job["status"]) == (2, 0, "queued")


def test_job_completes_exactly_when_the_last_item_lands(store, job_id):
    store.start(job_id)
    store.record([ok(job_id, 0), ok(job_id, 1), ok(job_id, 2)])
    assert store.get(job_id)["status"] == "running"
    store.record([ItemResult(job_id, 3, encode_error(ModelError("boom")), False), ok(job_id, 2)])
    job = store.get(job_id)
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed", 3, 1)
    assert job["finished_at"] >= job["started_at"] >= job["created_at"]
    assert store.wait_done(job_id, 0.1)


def test_first_write_wins_for_an_index(store, job_id):
    store.record([ok(job_id, 1)])
    store.record([ItemResult(job_id, 1, encode_error(ModelError("late duplicate")), False)])
    assert decode(store.outputs(job_id, 1, 2)[0][1]) == ("output", 10)


def test_one_round_trip_records_several_jobs(store, job_id):
    other = uuid.uuid4().hex
    store.create(other, {"model": "echo", "version": "1", "total": 1})
    assert store.record([ok(job_id, 0), ok(other, 0)]) == {job_id: (1, 0), other: (1, 0)}
    assert store.get(other)["status"] == "completed"


def test_missing_lists_indices_without_a_result(store, job_id):
    store.record([ok(job_id, 1), ok(job_id, 3)])
    assert store.missing(job_id, range(4)) == [0, 2]


def test_writes_for_an_expired_job_are_dropped(store):
    assert store.record([ok("gone", 0)]) == {"gone": (-1, -1)}
    assert store.outputs("gone", 0, 1) == []


def test_cancel_keeps_cancelled_after_the_last_item(store, job_id):
    assert store.cancel(job_id) == "cancelled"
    store.record([ok(job_id, i) for i in range(4)])
    job = store.get(job_id)
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert store.cancel("no-such-job") is None


def test_cancel_does_not_undo_a_completed_job(store, job_id):
    store.record([ok(job_id, i) for i in range(4)])
    assert store.cancel(job_id) == "completed"


@pytest.fixture
def own_redis(tmp_path):
    """A server of this test's own, whose script cache it may flush."""
    from batchery.cli.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", persist=False).start()
    yield redis.Redis.from_url(server.url)
    server.stop()


def script_commands(client) -> int:
    """SCRIPT EXISTS / LOAD calls so far (Redis 6 counts them as ``script``, Redis 7 as ``script|exists``...)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_script"))


def test_a_batch_is_one_round_trip_and_survives_a_lost_script_cache(own_redis):
    store = JobStore(own_redis, 60)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 4})
    assert store.record([ok(job_id, 0)]) == {job_id: (1, 0)}  # loads the script, once
    before = script_commands(own_redis)
    assert store.record([ok(job_id, 0), ok(job_id, 1)]) == {job_id: (1, 0)}
    assert script_commands(own_redis) == before  # no SCRIPT EXISTS before each batch

    own_redis.script_flush()  # as after a Redis restart
    assert store.record([ok(job_id, 1), ok(job_id, 2), ok(job_id, 3)]) == {job_id: (2, 0)}
    job = store.get(job_id)
    assert (job["status"], job["succeeded"]) == ("completed", 4)


def test_waiting_outlasts_the_clients_socket_timeout(settings, job_id):
    """A wait longer than one blocking read may take (redis-py gives up on a socket after 5 s by default)."""
    impatient = JobStore(redis.Redis.from_url(settings.effective_redis_url, socket_timeout=0.3), settings.job_ttl_s)
    finish = threading.Timer(0.8, lambda: impatient.record([ok(job_id, i) for i in range(4)]))
    finish.start()
    try:
        assert impatient.wait_done(job_id, 5.0) is True
    finally:
        finish.cancel()
    assert impatient.wait_done(job_id, 0.01) is True


@pytest.mark.parametrize("timeout_s", [0.0004, 0.001, 0.003])
def test_a_wait_left_with_less_than_a_millisecond_still_ends_on_time(store, job_id, timeout_s):
    """Redis reads a blocking timeout in whole milliseconds, and one that truncates to 0 blocks for ever: the last
    slice of a wait (here the whole of it) must not hang the caller (a predict past its timeout got its 200)."""
    started = time.monotonic()
    assert store.wait_done(job_id, timeout_s) is False
    assert time.monotonic() - started < 1.0


def test_waiting_for_a_job_that_does_not_finish_times_out(store, job_id):
    started = time.monotonic()
    assert store.wait_done(job_id, 0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0


def test_get_many_reads_existing_jobs_in_order(store, job_id):
    other = uuid.uuid4().hex
    store.create(other, {"model": "echo", "version": "1", "total": 1})
    found = store.get_many([other, "no-such-job", job_id])
    assert [job["id"] for job in found] == [other, job_id]
    assert found[1] == store.get(job_id)


def test_the_write_that_ends_a_job_reports_it_once_with_its_model_status_and_duration(store, job_id):
    started = store.start(job_id)
    assert (started.status, started.deadline, started.created_at) == ("running", None, store.get(job_id)["created_at"])
    finished = []
    reporting = JobStore(store.redis, store.job_ttl_s)
    reporting.on_finish = lambda *job: finished.append(job)
    reporting.record([ok(job_id, 0), ok(job_id, 1), ok(job_id, 2)])
    assert finished == [], "not finished yet"
    reporting.record([ok(job_id, 3), ok(job_id, 2)])
    reporting.record([ok(job_id, 3)])
    job = store.get(job_id)
    assert finished == [("echo", "completed", pytest.approx(job["finished_at"] - job["created_at"]), "standard")]


@pytest.mark.parametrize("claims, looked_up", [(0, False), (1, True), (None, True)])
def test_the_storing_script_looks_up_claims_only_for_jobs_that_may_own_some(store, claims, looked_up):
    """A job sent with the cache off is created with claims '0', and storing its items makes no claim lookup
    (one HGET an item); a job with the cache on, or one created before the field existed, still resolves
    its claims. Seen from outside: an entry in the job's claims hash is resolved (removed) or left alone."""
    job_id = uuid.uuid4().hex
    fields = {"model": "echo", "version": "1", "total": 1}
    if claims is not None:
        fields["claims"] = claims
    store.create(job_id, fields)
    owns = keys.job_owns(job_id, 0)
    store.redis.hset(owns, "0", "echo@1:digest")
    assert store.record([ok(job_id, 0)]) == {job_id: (1, 0)}
    assert (store.redis.hget(owns, "0") is None) is looked_up


def calls(client, *commands: str) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)


def test_a_batch_is_stored_a_shard_at_a_time_each_item_once(own_redis):
    """1,000 items across two output shards, some twice in the batch, some stored before, one of a job that is
    gone: each item counts once with its first value, and Redis is called per shard, not per item."""
    store = JobStore(own_redis, 60)
    job_id, gone = uuid.uuid4().hex, uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 1100})
    first = keys.SHARD_ITEMS - 500
    indices = range(first, first + 1000)
    store.record([ok(job_id, i) for i in indices[:10]])  # stored before
    twice = [ItemResult(job_id, i, encode_output("second"), True) for i in indices[20:30]]
    batch = [ok(job_id, i) for i in indices] + twice + [ok(gone, 0)]
    before = calls(own_redis, "hsetnx", "hset", "hmget")
    assert store.record(batch) == {job_id: (990, 0), gone: (-1, -1)}
    assert calls(own_redis, "hsetnx", "hset", "hmget") - before <= 6, "an HMGET and an HSET per shard, not a call per item"
    assert [decode(raw)[1] for _, raw in store.outputs(job_id, first, first + 1000)] == [i * 10 for i in indices]
    assert store.get(job_id)["succeeded"] == 1000


def test_a_batch_goes_to_redis_as_one_argument_an_item_and_binary_values_come_back_whole(store):
    """A job's items travel as its id, their indices, their flags and one value each; a value is any bytes
    (a float32 vector's, here holding ',' and digits), an error's flag travels with it."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 256})
    vector = np.frombuffer(b"1,2,3,4," * 4, dtype=np.float32)
    batch = [ItemResult(job_id, i, encode_output(vector), True) for i in range(255)]
    batch.append(ItemResult(job_id, 255, encode_error(ModelError("boom")), False))
    assert len(record_args(batch)) == 256 + 3
    assert store.record(batch) == {job_id: (255, 1)}
    stored = dict(store.outputs(job_id, 0, 256))
    kind, value = decode(stored[7])
    assert kind == "output" and value.tobytes() == vector.tobytes()
    assert decode(stored[255]) == ("error", {"code": "model_error", "message": "boom"})
