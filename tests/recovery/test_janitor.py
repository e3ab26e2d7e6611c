"""What the janitor settles that no single chunk owns: a drifted backlog counter."""

from __future__ import annotations

import time

import pytest

from batchery import keys


@pytest.mark.slow
def test_a_backlog_left_with_nothing_queued_is_set_back_to_zero(stack_factory):
    stack = stack_factory(janitor_interval_s=0.5)
    stack.worker("sweeper")
    stack.client.set(keys.backlog("echo-recovery"), 1216)  # items that, say, a hand-purged queue took with it
    stack.client.set(keys.backlog_at("echo-recovery"), 1, px=1500)  # counted in a moment ago: not yet
    time.sleep(1.0)
    assert stack.backlog() == 1216, "not while items may be on their way"
    deadline = time.monotonic() + 10
    while stack.backlog():
        assert time.monotonic() < deadline, "the janitor never reconciled the backlog"
        time.sleep(0.1)
    assert "had 1216 items counted in its backlog and none anywhere; reset" in stack.workers[0].log_tail(200)
