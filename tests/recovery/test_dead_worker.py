"""A SIGKILLed worker's chunks are back in work within seconds, with the broker's default 10-minute
visibility timeout: the supervisor puts them back the moment it sees the death, and without a supervisor the
janitor does once the dead worker's heartbeat is gone."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import pytest

from batchery.store.heartbeats import read_workers

RECOVERY_S = 30


def kill_mid_job_and_time_the_rest(stack, kill) -> float:
    stack.serve()
    inputs = [f"{uuid.uuid4().hex[:6]}-{i}" for i in range(4000)]
    job = stack.submit(inputs, cache=False)
    stack.wait_progress(job, 400)
    kill()
    killed_at = time.monotonic()
    doc = stack.wait(job, timeout_s=120)
    took_s = time.monotonic() - killed_at
    assert doc["counts"] == {"succeeded": 4000, "failed": 0, "pending": 0, "cached": 0}
    assert stack.outputs(job, 4000) == inputs
    stack.settle()
    return took_s


@pytest.mark.slow
def test_a_supervised_workers_chunks_come_back_as_soon_as_it_dies(stack_factory):
    """A heartbeat that outlives the test: only the supervisor can have put the chunks back in time."""
    stack = stack_factory(worker_heartbeat_s=2.0, worker_heartbeat_ttl_s=120.0)
    assert stack.settings.visibility_timeout_s == 600
    stack.pool(2)

    def kill_cpu0() -> None:
        victim = next(w for w in read_workers(stack.client) if w["hostname"].startswith("cpu0@"))
        os.kill(victim["pid"], signal.SIGKILL)

    took_s = kill_mid_job_and_time_the_rest(stack, kill_cpu0)
    assert took_s < RECOVERY_S, f"the dead worker's chunks took {took_s:.0f}s to come back"
    log = stack.pool_log()
    assert "died: killed by signal SIGKILL" in log
    held = re.search(r"cpu0: (\d+) chunks it held are back in their queues", log)
    assert held and int(held.group(1)) > 0, "the victim must have held chunks when it was killed"


@pytest.mark.slow
def test_an_unsupervised_dead_workers_chunks_come_back_once_its_heartbeat_is_gone(stack_factory):
    stack = stack_factory(worker_heartbeat_s=2.0, worker_heartbeat_ttl_s=10.0)
    victim = stack.worker("victim")
    survivor = stack.worker("survivor")
    took_s = kill_mid_job_and_time_the_rest(stack, lambda: victim.process.send_signal(signal.SIGKILL))
    assert took_s < RECOVERY_S, f"the dead worker's chunks took {took_s:.0f}s to come back"
    assert "back in their queues" in survivor.log_tail(2000), "the victim must have held chunks when it was killed"

