"""A chunk message lost between the broker and a worker (popped by a worker killed before kombu recorded it as
unacknowledged, or never published at all) is found by the janitor and sent again."""

from __future__ import annotations

import dataclasses
import time

import pytest

from batchery.models.registry import load_registry
from batchery.tasks.celery_app import create_celery
from batchery.tasks.enqueue import Enqueuer


@pytest.mark.slow
def test_a_chunk_popped_off_the_queue_and_never_run_is_sent_again(stack_factory):
    stack = stack_factory(janitor_grace_s=2.0, chunk_size=50)
    spec = load_registry(stack.settings.models_file).get("echo-recovery")
    enqueuer = Enqueuer(create_celery(stack.settings), stack.settings.job_store(), stack.settings, load_registry(stack.settings.models_file))
    job_id = enqueuer.submit(spec, list(range(500)), cache=False)
    queue = spec.queue_for("standard")
    assert stack.client.llen(queue) == 2, "two chunks in flight, the lane's budget with no worker up; 8 held"
    lost = stack.client.rpop(queue)  # the oldest message, as BRPOP hands it to a worker that then dies
    assert b'"chunk": 0' in lost or b"chunk" in lost
    stack.worker("finder")
    assert stack.settings.job_store().wait_done(job_id, 60), stack.settings.job_store().get(job_id)
    job = stack.settings.job_store().get(job_id)
    assert (job["succeeded"], job["failed"]) == (500, 0)
    assert "was lost on its way to a worker; sent again" in stack.workers[0].log_tail(500)
    stack.settle()


@pytest.mark.slow
def test_chunks_whose_messages_were_never_published_are_sent(stack_factory):
    """The API died between writing a job's chunk records and publishing their messages."""
    stack = stack_factory(janitor_grace_s=2.0, chunk_size=50)
    spec = load_registry(stack.settings.models_file).get("echo-recovery")
    store = stack.settings.job_store()
    unpublished = dataclasses.replace(stack.settings, broker_url="redis://127.0.0.1:1/0")
    enqueuer = Enqueuer(create_celery(unpublished), store, unpublished, load_registry(stack.settings.models_file))
    enqueuer.dispatcher.publish = lambda *args, **kwargs: None  # as if the process died right after the records
    job_id = enqueuer.submit(spec, list(range(200)), cache=False)
    assert stack.client.llen(spec.queue_for("standard")) == 0 and store.get(job_id)["chunks"] == 4
    started = time.monotonic()
    stack.worker("sender")
    assert store.wait_done(job_id, 60), store.get(job_id)
    assert store.get(job_id)["succeeded"] == 200 and time.monotonic() - started < 60
    stack.settle()
