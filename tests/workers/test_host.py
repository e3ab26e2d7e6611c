"""The model host in-process, against the real job store."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from batchery.models.registry import ModelSpec
from batchery.store import ItemResult
from batchery.store.chunks import Taken
from batchery.store.codec import decode, encode_output
from batchery.workers.host import ModelHost


def test_a_chunk_for_a_model_this_worker_lacks_ends_its_items_with_an_error(settings, store):
    host = ModelHost([ModelSpec("echo", "echo")], settings, "test@host", store)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "elsewhere", "version": "1", "total": 3})
    assert host.run_chunk(job_id, "elsewhere", 0, Taken([0, 1, 2], ["a", "b", "c"], "standard")) == {"job_id": job_id, "chunk": 0, "failed": 3}
    job = store.get(job_id)
    assert (job["status"], job["failed"]) == ("completed", 3)
    kind, error = decode(store.outputs(job_id, 0, 1)[0][1])
    assert kind == "error" and error["code"] == "model_not_found"


def test_a_chunk_of_a_cancelled_job_never_reaches_a_model(settings, store):
    host = ModelHost([ModelSpec("echo", "echo")], settings, "test@host", store)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 2})
    store.cancel(job_id)
    assert host.run_chunk(job_id, "echo", 0, Taken([0, 1], ["a", "b"], "standard")) == {"job_id": job_id, "chunk": 0, "cancelled": 2}
    assert {decode(raw)[1]["code"] for _, raw in store.outputs(job_id, 0, 2)} == {"cancelled"}


@pytest.fixture
def echo_host(settings, store) -> Iterator[ModelHost]:
    """A host serving echo, its batcher started."""
    host = ModelHost([ModelSpec("echo", "echo")], settings, "test@host", store)
    host.start()
    yield host
    host.stop()


def test_a_chunk_taken_again_computes_only_the_items_still_without_a_result(echo_host, store):
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 4})
    store.record([ItemResult(job_id, 1, encode_output("b"), True), ItemResult(job_id, 3, encode_output("d"), True)])
    again = Taken([0, 1, 2, 3], ["a", "b", "c", "d"], "standard", first=False)
    outcome = echo_host.run_chunk(job_id, "echo", 0, again)
    assert (outcome["items"], outcome["succeeded"]) == (2, 2), "items 1 and 3 had their results already"
    job = store.get(job_id)
    assert (job["status"], job["succeeded"]) == ("completed", 4)


def test_a_first_take_runs_every_item_and_still_counts_each_once(echo_host, store):
    """A first take does not ask which items are missing; an item another path ended meanwhile (here one
    stored by hand) is computed again, and storing it again changes nothing."""
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 3})
    store.record([ItemResult(job_id, 2, encode_output("kept"), True)])
    outcome = echo_host.run_chunk(job_id, "echo", 0, Taken([0, 1, 2], ["a", "b", "c"], "standard", first=True))
    assert outcome["items"] == 3
    job = store.get(job_id)
    assert (job["status"], job["succeeded"], job["failed"]) == ("completed", 3, 0)
    assert decode(store.outputs(job_id, 2, 3)[0][1]) == ("output", "kept"), "the first result stays"
