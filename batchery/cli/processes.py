"""Command lines for the processes batchery runs: a worker, the API, Flower."""

from __future__ import annotations

import sys
import tempfile
from typing import Sequence

from batchery.settings import Settings


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "batchery.workers", *args]


def worker_argv(settings: Settings, queues: Sequence[str], name: str) -> list[str]:
    """A Celery worker named ``name@host`` consuming ``queues``, on the threads pool: a worker process never
    forks, so a CUDA context made in it is never inherited by a child that cannot use it."""
    return celery_argv(
        "worker",
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={','.join(queues)}",
        f"--hostname={name}@%h",
        "--loglevel=INFO",
        *(["--task-events"] if settings.task_events else []),
    )


def api_argv(settings: Settings) -> list[str]:
    """gunicorn on gthread, in batchery's variant that bounds how long a request may take to arrive."""
    return [
        sys.executable, "-m", "gunicorn",
        f"--bind={settings.host}:{settings.port}",
        f"--workers={settings.api_workers}",
        "--worker-class=batchery.app.gunicorn_worker.ThreadWorker",
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
