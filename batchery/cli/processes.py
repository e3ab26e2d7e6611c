"""Command lines for the processes batchery runs (worker, API, Flower) and a small supervisor for `up`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

from batchery.models.registry import Registry
from batchery.settings import Settings

log = logging.getLogger(__name__)


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "batchery.tasks", *args]


def worker_argv(settings: Settings, registry: Registry, models: Sequence[str] = (), name: str = "cpu") -> list[str]:
    """A Celery worker on the threads pool consuming the queues of ``models`` (default: all)."""
    specs = [registry.get(m) for m in models] if models else list(registry)
    return celery_argv(
        "worker",
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={','.join(s.queue for s in specs)}",
        f"--hostname={name}@%h",
        "--loglevel=INFO",
        "--task-events",
    )


def api_argv(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        f"--bind={settings.host}:{settings.port}",
        f"--workers={settings.api_workers}",
        "--worker-class=gthread",
        f"--threads={settings.api_threads}",
        "--timeout=120",
        "--config=python:batchery.app.gunicorn_conf",
        "batchery.app:create_app()",
    ]


def api_env() -> dict[str, str]:
    """gunicorn's processes share metrics through a fresh multiprocess folder, set before they import."""
    return {"PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="batchery-metrics-")}


def flower_argv(settings: Settings) -> list[str]:
    return celery_argv("flower", f"--port={settings.flower_port}", f"--address={settings.host}")


def flower_env(settings: Settings) -> dict[str, str]:
    """Flower's basic auth goes in its environment, never its command line, which any local user can read."""
    return {"FLOWER_BASIC_AUTH": settings.flower_basic_auth} if settings.flower_basic_auth else {}


@dataclass
class Supervisor:
    """Starts named child processes with the settings in their environment and stops them together."""

    settings: Settings
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **self.settings.as_env(), **(extra_env or {})}
        self.children[name] = subprocess.Popen(argv, env=env, start_new_session=True)
        log.info("started %s (pid %d)", name, self.children[name].pid)

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.children.items() if p.poll() is not None}

    def wait(self) -> None:
        """Block until a child exits or SIGINT/SIGTERM arrives."""
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(True))
        while not stop and not self.exited():
            time.sleep(0.2)
        for name, code in self.exited().items():
            log.error("%s exited with code %s", name, code)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child (workers drain), then SIGKILL what has not exited in ``timeout_s``."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + timeout_s
        for name, child in self.children.items():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
