"""A signal wakes the worker's event loop at once, so a warm shutdown does not wait out the loop's poll."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterator

import pytest
from kombu.asynchronous import Hub

from batchery.workers.wakeup import SignalWakeup


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub()
    yield hub
    hub.close()


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    """SIGUSR1 with a Python handler that only notes it, as Celery's TERM handler only sets a flag."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    yield seen
    signal.signal(signal.SIGUSR1, previous)


def one_poll_after_a_signal(hub: Hub) -> float:
    """Seconds one turn of the loop takes when a signal arrives 0.1 s into its poll."""
    idle_r, idle_w = os.pipe()  # a reader that never fires, so that the loop polls (and waits) at all
    hub.add_reader(idle_r, lambda: None)
    loop = hub.create_loop()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    started = time.monotonic()
    next(loop)
    elapsed = time.monotonic() - started
    hub.remove_reader(idle_r)
    os.close(idle_r)
    os.close(idle_w)
    return elapsed


def test_a_signal_ends_the_loops_poll_at_once(hub: Hub, usr1: list[int]) -> None:
    step = SignalWakeup.__new__(SignalWakeup)
    step.pipe, step.previous = None, -1
    step.register_with_event_loop(None, hub)
    try:
        elapsed = one_poll_after_a_signal(hub)
    finally:
        step.shutdown(None)
    assert usr1 == [signal.SIGUSR1]
    assert elapsed < 0.6, f"the poll went on {elapsed:.2f} s after the signal"
    assert signal.set_wakeup_fd(-1) == -1, "shutdown gave the wakeup fd back"


def test_without_it_the_poll_runs_its_full_second(hub: Hub, usr1: list[int]) -> None:
    """The case the step is for: Python resumes a poll that a handled signal interrupted."""
    assert one_poll_after_a_signal(hub) >= 0.9
