"""Chunks through a real worker: redelivery is idempotent, and a job is split, never sent per item."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from batchery import keys
from batchery.models.registry import load_registry
from batchery.tasks import create_celery
from batchery.tasks.enqueue import Dispatcher, Enqueuer, chunk_bounds, task_id
from batchery.store.codec import decode
from tests.helpers import send_job


@pytest.fixture(scope="module")
def celery(settings):
    return create_celery(settings)


def wait_completed(store, job_id: str, timeout_s: float = 30) -> dict:
    assert store.wait_done(job_id, timeout_s), store.get(job_id)
    return store.get(job_id)


@pytest.mark.parametrize("total, size, expected", [(10, 4, [(0, 4), (4, 8), (8, 10)]), (4, 4, [(0, 4)]), (1, 256, [(0, 1)])])
def test_chunk_bounds_cover_every_index_once(total, size, expected):
    assert chunk_bounds(total, size) == expected


def test_a_chunk_delivered_twice_counts_each_item_once(celery, store, settings, echo_worker):
    spec = load_registry(settings.models_file).get("echo")
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 300})
    inputs = list(range(300))
    numbers = send_job(celery, store, spec, job_id, inputs, chunk_size=100)
    dispatcher = Dispatcher(celery, store, 100)
    for number in numbers:  # each chunk's message again, as a redelivery would
        dispatcher.publish(spec.name, spec.queue_for("standard"), job_id, number, task_id(job_id, number, ".again"), time.time())
    job = wait_completed(store, job_id)
    assert (job["succeeded"], job["failed"]) == (300, 0)
    assert [decode(raw)[1] for _, raw in store.outputs(job_id, 0, 300)] == inputs


def test_a_job_becomes_one_task_per_chunk(celery, store, settings, echo_worker, redis_client):
    spec = load_registry(settings.models_file).get("echo")
    registry = load_registry(settings.models_file)
    job_id = Enqueuer(celery, store, settings, registry).submit(spec, list(range(1000)), cache=False)
    wait_completed(store, job_id)
    assert store.get(job_id)["succeeded"] == 1000
    assert store.redis.hget(keys.job(job_id), "claims") == b"0", "sent with the cache off: it owns no claim"
    deadline = time.monotonic() + 10  # a chunk logs "succeeded" just after it stored the job's last items
    while (received := echo_worker.log_path.read_text().count(f"Task batchery.run_chunk[{job_id}.")) < 16:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert received == 2 * 8, "1000 items in chunks of 128 are 8 tasks (logged as received and as succeeded)"


@pytest.mark.parametrize("model_chunk, chunks", [(300, 4), (0, 8)])
def test_a_model_with_a_chunk_size_of_its_own_is_sent_in_chunks_of_that_size(celery, store, settings, echo_worker, model_chunk, chunks):
    spec = dataclasses.replace(load_registry(settings.models_file).get("echo"), chunk_size=model_chunk)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "echo", "version": "1", "total": 1000})
    numbers = Dispatcher(celery, store, 128).send(spec, job_id, list(enumerate(range(1000))), int(time.time()) + 3600)
    assert len(numbers) == chunks, "1000 items: chunks of the model's size, or of the deployment's 128 when it has none"
    wait_completed(store, job_id)
    assert [decode(raw)[1] for _, raw in store.outputs(job_id, 0, 1000)] == list(range(1000))
