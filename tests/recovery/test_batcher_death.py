"""A worker whose batcher dies stops counting as live at once, hands its chunks back, and is restarted by
its supervisor; the job still ends with every item exactly once."""

from __future__ import annotations

import time
import uuid

import pytest

from batchery.models.registry import ModelSpec
from batchery.faults.injection import InjectedFatal
from batchery.runtimes.echo import EchoRuntime
from batchery.store.heartbeats import read_workers
from batchery.workers.host import ModelHost


@pytest.mark.slow
def test_batchers_that_die_at_random_lose_no_item_and_their_workers_come_back(stack_factory):
    stack = stack_factory()
    stack.pool(1, {"BATCHERY_FAULT_FATAL_RATE": "0.05"})
    stack.serve()
    inputs = [f"{uuid.uuid4().hex[:6]}-{i}" for i in range(1500)]  # some 94 batches: a death is all but sure
    job = stack.submit(inputs, cache=False)
    doc = stack.wait(job, timeout_s=240)  # each death in a row doubles the wait before the restart
    assert doc["counts"] == {"succeeded": 1500, "failed": 0, "pending": 0, "cached": 0}
    assert stack.outputs(job, 1500) == inputs
    log = stack.pool_log()
    assert "injected fatal fault" in log and "no longer healthy" in log, "no batcher died, so nothing was proven"
    assert "died: exit code 1" in log, "the unhealthy worker exits with a failure, and is started again"
    stack.settle()


def test_a_dead_batcher_marks_its_worker_unready_in_the_very_next_heartbeat(settings, store):
    class Dying(EchoRuntime):
        def run(self, prepared):
            raise InjectedFatal("boom")

    host = ModelHost([ModelSpec("echo", "echo", input="json", max_wait_ms=1)], settings, f"dying-{uuid.uuid4().hex[:6]}@test", store)
    reasons = []
    host.on_unhealthy = reasons.append
    host.start()
    batcher = host.batchers["echo"]
    dying = Dying(batcher.spec, "cpu")
    batcher.runtime = dying
    host.announce()
    try:
        assert [w["ready"] for w in read_workers(store.redis) if w["hostname"] == host.hostname] == [True]
        batcher.submit("no-job", [(0, 0)])
        deadline = time.monotonic() + 5
        while host.healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not host.healthy and reasons and "died" in reasons[0]
        assert [w["ready"] for w in read_workers(store.redis) if w["hostname"] == host.hostname] == [False]
    finally:
        host.stop()
