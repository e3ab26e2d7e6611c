"""The supervisor with real child processes: restarts with a back-off, says why a child died, drains."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from batchery.cli.supervisor import Supervisor, exit_reason, restart_delay


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Running:
    """``Supervisor.run`` on a thread, as the command runs it on its main one."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(supervisor.run()), daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.request_stop()
        self.thread.join(10)
        self.supervisor.stop(5)


def test_backoff_doubles_up_to_its_cap_and_exit_reasons_read_plainly():
    assert [restart_delay(n, 1.0, 30.0) for n in (1, 2, 3, 5, 6, 20)] == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0]
    assert exit_reason(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert exit_reason(3) == "exit code 3"


def test_a_killed_worker_comes_back_after_its_back_off_and_the_log_says_why(caplog):
    supervisor = Supervisor(backoff_min_s=0.5)
    supervisor.spawn("sleeper", python("import time; time.sleep(60)"), restart=True)
    child = supervisor.children["sleeper"]
    first = child.process.pid
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"), Running(supervisor) as running:
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: child.process.pid != first and child.running)
        assert time.monotonic() - killed_at >= 0.5, "restarted before its back-off"
        assert running.thread.is_alive()
    assert f"sleeper (pid {first}) died: killed by signal SIGKILL" in caplog.text
    assert running.result == [0]


def test_a_worker_that_keeps_dying_waits_twice_as_long_each_time(caplog):
    supervisor = Supervisor(backoff_min_s=0.1)
    supervisor.spawn("crasher", python("import sys; sys.exit(2)"), restart=True)
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"), Running(supervisor):
        wait_until(lambda: supervisor.children["crasher"].failures >= 4)
    delays = [float(d) for d in re.findall(r"exit code 2 after [\d.]+s; restarting in ([\d.]+)s", caplog.text)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]


def test_the_exit_of_a_child_that_is_not_restarted_ends_the_run(caplog):
    supervisor = Supervisor()
    supervisor.spawn("worker", python("import time; time.sleep(60)"), restart=True)
    supervisor.spawn("api", python("import time, sys; time.sleep(0.3); sys.exit(3)"))
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"):
        assert supervisor.run() == 1
        supervisor.stop(5)
    assert "api" in caplog.text and "exited: exit code 3" in caplog.text
    assert not supervisor.children["worker"].running


DRAINS = """
import signal, sys, time, pathlib
def drain(*_):
    time.sleep(0.5)
    sys.exit(0)
signal.signal(signal.SIGTERM, drain)
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""

STUCK = """
import signal, sys, time, pathlib
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""


def test_stop_lets_children_drain_and_kills_those_that_outstay_the_timeout(tmp_path: Path, caplog):
    supervisor = Supervisor()
    supervisor.spawn("drains", [*python(DRAINS), str(tmp_path / "drains")], restart=True)
    supervisor.spawn("stuck", [*python(STUCK), str(tmp_path / "stuck")], restart=True)
    wait_until(lambda: (tmp_path / "drains").exists() and (tmp_path / "stuck").exists())
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"):
        supervisor.stop(timeout_s=2.0)
    assert 2.0 <= time.monotonic() - started < 5.0
    assert supervisor.children["drains"].process.returncode == 0
    assert supervisor.children["stuck"].process.returncode == -signal.SIGKILL
    assert "stuck" in caplog.text and "did not stop in time" in caplog.text


def test_a_child_still_warming_up_is_killed_after_the_quick_timeout_while_the_others_drain(tmp_path: Path):
    """Ctrl-C during a warm-up: a worker that holds no chunk yet (and would exit only once warm) goes in seconds,
    while a warm one keeps its whole drain."""
    supervisor = Supervisor()
    supervisor.spawn("warming", [*python(STUCK), str(tmp_path / "warming")], restart=True)
    supervisor.spawn("warm", [*python(STUCK), str(tmp_path / "warm")], restart=True)
    wait_until(lambda: (tmp_path / "warming").exists() and (tmp_path / "warm").exists())
    started = time.monotonic()
    stopping = threading.Thread(target=supervisor.stop, kwargs={"timeout_s": 30.0, "quick": ["warming"], "quick_s": 0.5})
    stopping.start()
    wait_until(lambda: supervisor.children["warming"].process.poll() is not None, timeout_s=5.0)
    assert time.monotonic() - started < 3.0
    assert supervisor.children["warm"].process.poll() is None, "a warm worker keeps its drain timeout"
    supervisor.children["warm"].process.kill()
    stopping.join(10)
    assert not stopping.is_alive()


def test_a_retired_child_drains_is_forgotten_and_never_restarted(tmp_path: Path, caplog):
    supervisor = Supervisor(backoff_min_s=0.1)
    supervisor.spawn("drains", [*python(DRAINS), str(tmp_path / "drains")], restart=True)
    supervisor.spawn("stays", python("import time; time.sleep(60)"), restart=True)
    wait_until(lambda: (tmp_path / "drains").exists())
    process = supervisor.children["drains"].process
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"), Running(supervisor) as running:
        supervisor.retire("drains", timeout_s=5.0)
        wait_until(lambda: "drains" not in supervisor.children)
        time.sleep(0.5)
        assert running.thread.is_alive(), "a retired child's exit does not end the run"
        assert list(supervisor.children) == ["stays"] and supervisor.children["stays"].running
    assert process.returncode == 0, "it drained (its SIGTERM handler ran), it was not killed"
    assert re.search(r"drains \(pid \d+\) retired: exit code 0, 0\.\d+s after it was asked to stop", caplog.text)
    assert "restarting" not in caplog.text


def test_a_retired_child_that_outstays_its_drain_is_killed_and_its_work_put_back(tmp_path: Path, caplog):
    put_back: list[str] = []
    supervisor = Supervisor()
    argv = [*python(STUCK), str(tmp_path / "stuck")]
    supervisor.spawn("stuck", argv, restart=True, on_death=lambda c: put_back.append(c.name))
    wait_until(lambda: (tmp_path / "stuck").exists())
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"), Running(supervisor):
        started = time.monotonic()
        supervisor.retire("stuck", timeout_s=1.0)
        wait_until(lambda: "stuck" not in supervisor.children)
        assert 1.0 <= time.monotonic() - started < 3.0
    assert put_back == ["stuck"], "its chunks go back at once, as a dead worker's do"
    assert "did not stop in time" in caplog.text and "stuck" in caplog.text
    assert "retired: killed by signal SIGKILL" in caplog.text


def test_watchers_run_on_every_turn_and_one_that_raises_is_logged_and_kept(caplog):
    seen: list[float] = []

    def failing(now: float) -> None:
        raise RuntimeError("boom")

    supervisor = Supervisor(watchers=[failing, seen.append])
    with caplog.at_level(logging.INFO, logger="batchery.cli.supervisor"), Running(supervisor):
        wait_until(lambda: len(seen) >= 3)
    assert seen == sorted(seen)
    assert "a watcher failed" in caplog.text and "boom" in caplog.text
