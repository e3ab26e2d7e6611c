"""Runs child processes together: workers that die come back with a back-off; SIGTERM drains them all.

A worker process should never exit on its own, so when one does (a crash, an OOM kill, an operator's
SIGKILL) the supervisor logs why and starts it again after a delay that doubles while it keeps dying
quickly. Any other child (the API, Flower) ending means the service is broken: the supervisor stops.
A child may also be retired on purpose (a scaling pool shrinks): it is asked to drain like at shutdown, killed if
it outstays its drain timeout, and forgotten once it has exited. Watchers (the pool's scaler) run on the
supervisor's own loop, so the children are only ever changed from one thread.
SIGTERM or SIGINT asks every child to stop; workers finish the batches they hold and hand back the chunks
they had not started, and whatever has not exited after the drain timeout is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Collection

from batchery import defaults

log = logging.getLogger(__name__)
TICK_S = 0.2


def restart_delay(
    failures: int, min_s: float = defaults.RESTART_BACKOFF_MIN_S, max_s: float = defaults.RESTART_BACKOFF_MAX_S
) -> float:
    """The wait before restart number ``failures`` of a child that keeps dying: min, 2·min, 4·min... max."""
    return min(max_s, min_s * 2 ** max(0, failures - 1))


def exit_reason(returncode: int) -> str:
    """What ended a process, as an operator reads it: an exit code or the signal's name."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool
    #: Called with the child when it dies, before it is started again (to put its unfinished work back).
    on_death: Callable[["Child"], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    #: While it drains on purpose (see :meth:`Supervisor.retire`): since when, and when it is killed if still there.
    retired_at: float | None = None
    retire_by: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Supervisor:
    """Named children started with ``base_env`` under them; :meth:`run` watches them until told to stop."""

    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    backoff_min_s: float = defaults.RESTART_BACKOFF_MIN_S
    backoff_max_s: float = defaults.RESTART_BACKOFF_MAX_S
    stable_s: float = defaults.RESTART_STABLE_S
    children: dict[str, Child] = field(default_factory=dict)
    signals: list[int] = field(default_factory=list)
    #: Called with ``time.monotonic()`` on every turn of :meth:`run`; one that raises is logged and kept.
    watchers: list[Callable[[float], None]] = field(default_factory=list)
    _wake: threading.Event = field(default_factory=threading.Event)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, restart: bool = False,
        on_death: Callable[[Child], None] | None = None,
    ) -> None:
        child = Child(name, argv, {**self.base_env, **(env or {})}, restart, on_death)
        self.children[name] = child
        child.start()

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT end :meth:`run`; a second one during the drain kills at once."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.request_stop(signum)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What a signal does; callable from another thread too."""
        self.signals.append(signum)
        self._wake.set()

    def run(self) -> int:
        """Watch the children until a signal (0) or the exit of a child that is not restarted (1)."""
        while not self.signals:
            now = time.monotonic()
            for child in list(self.children.values()):
                if child.retire_by is not None:
                    self._retiring(child, now)
                elif child.restart_at is not None:
                    if now >= child.restart_at:
                        child.start()
                elif not child.running and not self._exited(child, now):
                    return 1
            self._watch(now)
            self._wake.wait(TICK_S)
        log.info("%s: stopping", signal.Signals(self.signals[0]).name)
        return 0

    def _watch(self, now: float) -> None:
        for watcher in self.watchers:
            try:
                watcher(now)
            except Exception:
                log.exception("supervisor: a watcher failed; it runs again on the next turn")

    def retire(self, name: str, timeout_s: float) -> None:
        """Stop ``name`` for good, as gracefully as :meth:`stop` does: SIGTERM now (a worker finishes the batches it
        holds and hands back the chunks it had not started), SIGKILL after ``timeout_s``; it is not restarted,
        and leaves :attr:`children` once it has exited."""
        child = self.children[name]
        child.restart = False
        child.restart_at = None
        child.retired_at = time.monotonic()
        child.retire_by = child.retired_at + timeout_s
        if child.running:
            child.process.terminate()  # type: ignore[union-attr]

    def _retiring(self, child: Child, now: float) -> None:
        """A retired child that exited is forgotten; one past its drain timeout is killed first, and what it held
        is put back at once (``on_death``), as for a worker that died."""
        if child.running and now < child.retire_by:  # type: ignore[operator]
            return
        if child.running:
            self._kill(child)
        assert child.process is not None
        code = child.process.returncode
        if code != 0 and child.on_death is not None:
            try:
                child.on_death(child)
            except Exception:
                log.exception("%s: could not put its unfinished work back; the janitor will", child.name)
        drained_s = time.monotonic() - child.retired_at  # type: ignore[operator]
        reason = exit_reason(code)
        log.info("%s (pid %d) retired: %s, %.1fs after it was asked to stop", child.name, child.process.pid, reason, drained_s)
        del self.children[child.name]

    def _exited(self, child: Child, now: float) -> bool:
        """Log why ``child`` ended and schedule its restart; False when it is not to be restarted."""
        assert child.process is not None
        lived_s = now - child.started_at
        reason = exit_reason(child.process.returncode)
        if not child.restart:
            log.error("%s (pid %d) exited: %s after %.1fs", child.name, child.process.pid, reason, lived_s)
            return False
        if child.on_death is not None:
            try:
                child.on_death(child)
            except Exception:
                log.exception("%s: could not put its unfinished work back; the janitor will", child.name)
        child.failures = 1 if lived_s >= self.stable_s else child.failures + 1
        delay = restart_delay(child.failures, self.backoff_min_s, self.backoff_max_s)
        child.restart_at = now + delay
        log.error(
            "%s (pid %d) died: %s after %.1fs; restarting in %.1fs (failure %d in a row)",
            child.name, child.process.pid, reason, lived_s, delay, child.failures,
        )
        return True

    def stop(
        self, timeout_s: float = defaults.WORKER_DRAIN_TIMEOUT_S, quick: Collection[str] = (),
        quick_s: float = defaults.WARMING_STOP_S,
    ) -> None:
        """SIGTERM every child (workers drain), then SIGKILL what is still there after ``timeout_s``.

        The children named in ``quick`` (workers still warming up, which hold no chunk and would only exit
        once their warm-up ends) are killed after ``quick_s`` instead: Ctrl-C during a warm-up takes seconds.
        """
        running = [c for c in self.children.values() if c.running]
        for child in running:
            if child.retire_by is None:  # a retired child was told already
                child.process.terminate()  # type: ignore[union-attr]
        started = time.monotonic()
        deadlines = {c.name: started + (min(timeout_s, quick_s) if c.name in quick else timeout_s) for c in running}
        signals_before = len(self.signals)
        while any(c.running for c in running) and len(self.signals) == signals_before:
            now = time.monotonic()
            late = [c for c in running if c.running and now >= deadlines[c.name]]
            if late and len(late) == sum(c.running for c in running):
                break
            for child in late:
                self._kill(child)
            time.sleep(TICK_S)
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                self._kill(child)
            else:
                reason = exit_reason(child.process.returncode)
                log.info("%s (pid %d) stopped: %s", child.name, child.process.pid, reason)

    @staticmethod
    def _kill(child: Child) -> None:
        assert child.process is not None
        log.warning("%s (pid %d) did not stop in time; killing it", child.name, child.process.pid)
        _kill_group(child.process.pid)
        child.process.wait()


def _kill_group(pid: int) -> None:
    """Kill what is left of a child's process group (gunicorn's workers, say)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
