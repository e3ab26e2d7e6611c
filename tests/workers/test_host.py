"""The model host in-process, against the real job store."""

from __future__ import annotations

import uuid

from batchery.models.registry import ModelSpec
from batchery.store.chunks import Taken
from batchery.store.codec import decode
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
