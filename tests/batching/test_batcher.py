"""The batcher with real runtimes and the real job store."""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import pytest

from batchery.batching import Batcher, BatcherStopped, BatchHook, QueueClosed, add_hook, remove_hook
from batchery.models.registry import ModelSpec
from batchery.store.dead_letters import DeadLetters
from batchery.runtimes.base import Runtime
from batchery.runtimes.echo import EchoRuntime
from batchery.store.codec import decode
from tests.helpers import new_job



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


class Poisoned(Runtime):
    """Fails any batch holding "bad", like a model that chokes on one input."""

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        if "bad" in prepared:
            raise ValueError("cannot digest 'bad'")
        return list(prepared)


class Short(Runtime):
    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        return prepared[:-1]


def test_one_poison_input_in_a_batch_of_64_fails_alone(store, sizes):
    batcher = Batcher(Poisoned(ModelSpec("t", "poisoned", max_batch_size=64, max_wait_ms=20), "cpu"), store).start()
    job_id = new_job(store, 64)
    inputs = [f"item {i}" for i in range(64)]
    inputs[37] = "bad"
    ticket = batcher.submit(job_id, list(enumerate(inputs)))
    assert ticket.wait(10) and (ticket.succeeded, ticket.failed) == (63, 1)
    results = [decode(raw) for _, raw in store.outputs(job_id, 0, 64)]
    assert results[37][0] == "error" and results[37][1]["code"] == "model_error" and "cannot digest" in results[37][1]["message"]
    assert [value for kind, value in results if kind == "output"] == inputs[:37] + inputs[38:]
    assert sizes.sizes == [64], "bisection happens inside the one batch the batcher formed"
    batcher.stop()
    letters = DeadLetters(store.redis).list(0, 1000)
    assert all(e["job_id"] != job_id for e in letters), "a permanent error is not retried, so it is no dead letter"


def test_a_model_returning_too_few_outputs_fails_its_items_not_silently(store):
    batcher = Batcher(Short(ModelSpec("t", "short", max_wait_ms=1), "cpu"), store).start()
    job_id = new_job(store, 3)
    ticket = batcher.submit(job_id, [(0, "a"), (1, "b"), (2, "c")])
    assert ticket.wait(10) and ticket.failed == 3
    for _, raw in store.outputs(job_id, 0, 3):
        kind, error = decode(raw)
        assert kind == "error" and "returned 0 outputs for 1 inputs" in error["message"]
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


class Shapes(BatchHook):
    def __init__(self) -> None:
        self.shapes = []

    def after_prepare(self, spec, items, shape):
        self.shapes.append(shape)


def test_after_prepare_sees_each_batch_fill_against_its_capacity(store):
    hook = add_hook(Shapes())
    try:
        batcher = Batcher(echo(max_batch_size=8, max_wait_ms=20), store).start()
        job_id = new_job(store, 5)
        batcher.submit(job_id, [(i, i) for i in range(5)]).wait()
        batcher.stop()
    finally:
        remove_hook(hook)
    assert [(s.items, s.capacity, s.tokens) for s in hook.shapes] == [(5, 8, None)]
    assert hook.shapes[0].fill == pytest.approx(5 / 8)
    assert hook.shapes[0].padding_fraction is None


class Stored(BatchHook):
    def __init__(self) -> None:
        self.results: dict[tuple[str, int], Any] = {}

    def after_store(self, spec, items, results):
        self.results.update({(item.job_id, item.index): r for item, r in zip(items, results)})


def test_after_store_sees_every_stored_result_even_of_items_that_never_ran(store):
    hook = add_hook(Stored())
    cancelled: set[str] = set()
    try:
        batcher = Batcher(echo(max_batch_size=4, max_wait_ms=1, batch_latency_ms=30), store, cancelled).start()
        keep, drop = new_job(store, 12), new_job(store, 12)
        first = batcher.submit(keep, [(i, i) for i in range(12)])
        second = batcher.submit(drop, [(i, i) for i in range(12)])
        cancelled.add(drop)
        assert first.wait(10) and second.wait(10)
        batcher.stop()
    finally:
        remove_hook(hook)
    assert [hook.results[(keep, i)] for i in range(12)] == list(range(12))
    dropped = [hook.results[(drop, i)] for i in range(12)]
    assert len(dropped) == 12 and sum(getattr(r, "code", None) == "cancelled" for r in dropped) == second.failed >= 8


class Unencodable(Runtime):
    """A model whose outputs JSON cannot hold (a set); the codec fails on them, after the model ran."""

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        return [{i} if i % 2 else i for i in prepared]


def test_an_output_that_cannot_be_stored_is_that_items_error_and_the_batcher_lives_on(store):
    batcher = Batcher(Unencodable(ModelSpec("t", "odd", input="json", max_wait_ms=1), "cpu"), store).start()
    job_id = new_job(store, 6)
    ticket = batcher.submit(job_id, [(i, i) for i in range(6)])
    assert ticket.wait(10) and batcher.alive
    stored = [decode(raw) for _, raw in store.outputs(job_id, 0, 6)]
    assert [kind for kind, _ in stored] == ["output", "error"] * 3
    assert "could not be stored" in stored[1][1]["message"]
    assert batcher.submit(job_id, [(0, 0)]).wait(10), "the batcher still takes work"
    batcher.stop()


class Fatal(BaseException):
    """What no stage expects: it ends the stage's loop."""


class DiesOnThirdBatch(Runtime):
    def __init__(self, spec: ModelSpec, device: str) -> None:
        super().__init__(spec, device)
        self.batches = 0

    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        self.batches += 1
        if self.batches == 3:
            raise Fatal("a bug in the run stage")
        return list(prepared)


def test_a_dead_stage_releases_every_waiting_chunk_and_tells_the_worker(store):
    deaths = []
    batcher = Batcher(DiesOnThirdBatch(ModelSpec("t", "dies", input="json", max_batch_size=4, max_wait_ms=1), "cpu"), store)
    batcher.on_death = lambda b, exc: deaths.append((b, exc))
    batcher.start()
    job_id = new_job(store, 40)
    tickets = [batcher.submit(job_id, [(i, i) for i in range(start, start + 10)]) for start in range(0, 40, 10)]
    errors = []
    for ticket in tickets:
        try:
            batcher.wait(ticket)
        except BatcherStopped as exc:
            errors.append(exc)
    assert errors, "chunks whose items the dead batcher never stored must not wait for ever"
    assert not batcher.alive and len(deaths) == 1 and isinstance(deaths[0][1], Fatal)
    with pytest.raises(QueueClosed):
        batcher.submit(job_id, [(0, 0)])


class Slow(Runtime):
    def run(self, prepared: Sequence[Any]) -> Sequence[Any]:
        time.sleep(3)
        return list(prepared)

    def close(self) -> None:
        self.closed = True


def test_stop_keeps_one_deadline_and_closes_the_runtime_only_once_its_batch_is_done(store):
    runtime = Slow(ModelSpec("t", "slow", input="json", max_wait_ms=1), "cpu")
    runtime.closed = False
    batcher = Batcher(runtime, store).start()
    job_id = new_job(store, 2)
    ticket = batcher.submit(job_id, [(0, 0), (1, 1)])
    time.sleep(0.3)  # the batch is running
    started = time.monotonic()
    assert batcher.stop(time.monotonic() + 0.5) is False
    assert time.monotonic() - started < 1.0, "three stages, one deadline: not one timeout each"
    assert runtime.closed is False, "the model is not closed under a batch that still runs"
    assert ticket.wait(10)
    assert batcher.stop(time.monotonic() + 5) is True and runtime.closed is True
