"""Chaos on a supervised pool: workers crash at random, batches fail transiently, handoffs fail half-way, a job
is cancelled while others wait on its items; every item of every job still ends exactly once."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from batchery import keys
from batchery.store.heartbeats import read_workers


@pytest.mark.slow
def test_crashes_transient_faults_and_broken_handoffs_lose_nothing(stack_factory):
    stack = stack_factory(visibility_timeout_s=30, janitor_interval_s=0.5)
    stack.pool(2, {
        "BATCHERY_FAULT_CRASH_RATE": "0.005",
        "BATCHERY_FAULT_TRANSIENT_RATE": "0.3",
        "BATCHERY_FAULT_HANDOFF_RATE": "0.6",  # at least 7 handoff steps below: a fault is all but sure
        "BATCHERY_RETRY_ATTEMPTS": "3",
        "BATCHERY_RETRY_BASE_S": "0.001",
    })
    stack.serve()
    run = uuid.uuid4().hex[:6]
    a_inputs = [f"{run}-a{i}" for i in range(2000)]
    c_inputs = [f"{run}-c{i}" for i in range(1000)]
    b_inputs = [f"{run}-same"] * 1500 + a_inputs[:1000]  # 1,499 waiters: shared a page at a time
    jobs = {"a": (stack.submit(a_inputs), a_inputs), "b": (stack.submit(b_inputs), b_inputs)}
    for name in ("e", "f"):
        inputs = [f"{run}-{name}"] * 1200
        jobs[name] = (stack.submit(inputs), inputs)
    cancelled = stack.submit(c_inputs)
    jobs["d"] = (stack.submit(list(reversed(c_inputs))), list(reversed(c_inputs)))
    time.sleep(0.5)
    stack.http.delete(cancelled["links"]["self"])
    kill_a_worker(stack)  # one crash for certain, beside those drawn at random
    for name, (job, inputs) in jobs.items():
        doc = stack.wait(job, timeout_s=300)
        assert doc["status"] == "completed", (name, doc)
        assert doc["counts"]["succeeded"] + doc["counts"]["failed"] == len(inputs), (name, doc)
        outputs = stack.outputs(job, len(inputs))
        ok = [o == i for o, i in zip(outputs, inputs)]
        errors = [o for o in outputs if isinstance(o, dict)]
        assert sum(ok) == doc["counts"]["succeeded"] and len(errors) == doc["counts"]["failed"], name
        assert {e["code"] for e in errors} <= {"transient_error"}, (name, errors[:3])
    ended = stack.wait(cancelled, timeout_s=120)
    assert ended["status"] == "cancelled" and ended["counts"]["pending"] == 0
    stack.settle()
    log = stack.pool_log()
    assert "died: killed by signal SIGKILL" in log, "nothing crashed"
    assert "injected handoff fault" in log, "no handoff failed half-way"
    assert not stack.client.llen(keys.handoffs())


def kill_a_worker(stack) -> None:
    """SIGKILL whichever pool process is live (one may be restarting after a crash drawn at random, and the
    heartbeat of one that has just crashed may still be in Redis: its pid is gone, so another is tried)."""
    deadline = time.monotonic() + 30
    while True:
        for worker in [w for w in read_workers(stack.client) if w["hostname"].startswith(("cpu0@", "cpu1@"))]:
            try:
                os.kill(worker["pid"], signal.SIGKILL)
                return
            except ProcessLookupError:
                continue
        assert time.monotonic() < deadline, "no pool process came back"
        time.sleep(0.1)
