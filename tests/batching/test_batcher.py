"""The batcher with real runtimes and the real job store."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Sequence

import pytest

from batchery.batching import Batcher, BatchHook, add_hook, remove_hook
from batchery.models.registry import ModelSpec
from batchery.runtimes.base import Runtime
from batchery.runtimes.echo import EchoRuntime
from batchery.store.codec import decode


def new_job(store, total: int) -> str:
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "t", "version": "1", "total": total})
    return job_id


class BatchSizes(BatchHook):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.jobs: list[set[str]] = []

    def after_batch(self, spec, items, results, seconds):
        self.sizes.append(len(items))
        self.jobs.append({item.job_id for item in items})


@pytest.fixture
def sizes():
    hook = add_hook(BatchSizes())
    yield hook
    remove_hook(hook)


def echo(max_batch_size: int = 16, max_wait_ms: float = 50, **options: Any) -> EchoRuntime:
    return EchoRuntime(ModelSpec("t", "echo", max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, options=options), "cpu")


def test_items_of_concurrent_chunks_of_several_jobs_share_batches(store, sizes):
    batcher = Batcher(echo(max_batch_size=16, batch_latency_ms=30), store).start()
    jobs = [new_job(store, 6) for _ in range(4)]
    tickets = []
    barrier = threading.Barrier(4)

    def chunk(job_id: str) -> None:
        barrier.wait()
        tickets.append(batcher.submit(job_id, [(i, f"{job_id}:{i}") for i in range(6)]))

    threads = [threading.Thread(target=chunk, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(t.wait(10) for t in tickets)
    batcher.stop()
    assert sum(sizes.sizes) == 24 and max(sizes.sizes) <= 16
    assert max(len(j) for j in sizes.jobs) >= 2, "a batch must mix items of several jobs"
    for job_id in jobs:
        assert [decode(raw)[1] for _, raw in store.outputs(job_id, 0, 6)] == [f"{job_id}:{i}" for i in range(6)]
        assert store.get(job_id)["status"] == "completed"


class Broken(Runtime):
    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        if "bad" in prepared:
            raise ValueError("cannot digest 'bad'")
        return prepared[:-1]


def test_a_failing_batch_ends_its_items_with_the_models_error(store):
    batcher = Batcher(Broken(ModelSpec("t", "broken", max_wait_ms=1), "cpu"), store).start()
    job_id = new_job(store, 2)
    ticket = batcher.submit(job_id, [(0, "fine"), (1, "bad")])
    assert ticket.wait(10) and (ticket.succeeded, ticket.failed) == (0, 2)
    errors = [decode(raw) for _, raw in store.outputs(job_id, 0, 2)]
    assert all(kind == "error" and e["code"] == "model_error" and "cannot digest" in e["message"] for kind, e in errors)
    batcher.stop()


def test_a_model_returning_too_few_outputs_fails_the_batch_not_silently(store):
    batcher = Batcher(Broken(ModelSpec("t", "broken", max_wait_ms=1), "cpu"), store).start()
    job_id = new_job(store, 3)
    ticket = batcher.submit(job_id, [(0, "a"), (1, "b"), (2, "c")])
    assert ticket.wait(10) and ticket.failed == 3
    kind, error = decode(store.outputs(job_id, 0, 1)[0][1])
    assert "returned 2 outputs for 3 inputs" in error["message"]
    batcher.stop()


def test_waiting_items_of_a_cancelled_job_are_dropped_with_cancelled(store):
    cancelled: set[str] = set()
    batcher = Batcher(echo(max_batch_size=4, max_wait_ms=1, batch_latency_ms=50), store, cancelled).start()
    keep, drop = new_job(store, 40), new_job(store, 40)
    first = batcher.submit(keep, [(i, i) for i in range(40)])
    second = batcher.submit(drop, [(i, i) for i in range(40)])
    cancelled.add(drop)
    assert first.wait(10) and second.wait(10)
    assert first.succeeded == 40
    assert second.failed >= 36, "at most the batch already in the model may run"
    codes = {decode(raw)[1]["code"] for _, raw in store.outputs(drop, 0, 40) if decode(raw)[0] == "error"}
    assert codes == {"cancelled"}
    batcher.stop()
