"""Command lines for the processes batchery runs: a worker, the API, Flower.

Each runs ``python -m celery`` or ``python -m gunicorn`` through :data:`BOOT`, which imports batchery from
where this process imported it before anything else runs. ``python -m`` puts the working folder first on
``sys.path``, and Celery and gunicorn put it there again when they import the app: run from a folder that
holds a ``batchery/`` directory (the parent of a clone, say), the children would import that instead.
"""

from __future__ import annotations

import ipaddress
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import batchery
from batchery.settings import Settings

#: ``python -c BOOT ENTRY MODULE ARGS...``: ENTRY (where batchery lies, or empty when the child's own path finds
#: it) replaces the working folder on ``sys.path``; batchery is imported; MODULE runs as ``python -m`` would.
BOOT = (
    "import sys, runpy; entry = sys.argv.pop(1); sys.path[0:1] = [entry] if entry else []; import batchery; "
    "del sys.argv[0]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def package_entry() -> str:
    """The folder batchery was imported from, unless it is on ``sys.path`` anyway (an installed package)."""
    root = Path(batchery.__file__).resolve().parent.parent
    elsewhere = {Path(entry).resolve() for entry in sys.path[1:] if entry}
    return "" if root in elsewhere else str(root)


def python_module_argv(module: str, *args: str) -> list[str]:
    """``python -m module args`` with batchery imported first, from where this process has it."""
    return [sys.executable, "-c", BOOT, package_entry(), module, *args]


def celery_argv(*args: str) -> list[str]:
    return python_module_argv("celery", "-A", "batchery.workers", *args)


def worker_argv(settings: Settings, queues: Sequence[str], name: str) -> list[str]:
    """A Celery worker named ``name@host`` consuming ``queues``, on the threads pool: a worker process never
    forks, so a CUDA context made in it is never inherited by a child that cannot use it.

    Without mingle: at start it asks every other worker for its revoked task ids and waits a full second for
    their answers, and batchery revokes no tasks (a job is cancelled in Redis); the second is a second more
    that a new worker, or a scaled-up one, takes to serve."""
    quiet = ("--quiet",) if settings.log_format == "text" else ()
    return celery_argv(
        *quiet,
        "worker",
        "--pool=threads",
        "--without-mingle",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={','.join(queues)}",
        f"--hostname={name}@%h",
        "--loglevel=INFO",
        *(["--task-events"] if settings.task_events else []),
    )


def api_argv(settings: Settings) -> list[str]:
    """gunicorn on gthread, in batchery's variant that bounds how long a request may take to arrive."""
    return python_module_argv(
        "gunicorn",
        f"--bind={settings.host}:{settings.port}",
        f"--workers={settings.api_workers}",
        "--worker-class=batchery.app.gunicorn_worker.ThreadWorker",
        f"--threads={settings.api_threads}",
        "--timeout=120",
        "--config=python:batchery.app.gunicorn_conf",
        "batchery.app:create_app()",
    )


def api_env() -> dict[str, str]:
    """gunicorn's processes share metrics through a fresh multiprocess folder, set before they import."""
    return {"PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="batchery-metrics-")}


def flower_argv(settings: Settings) -> list[str]:
    return celery_argv("flower", f"--port={settings.flower_port}", f"--address={settings.host}")


def flower_env(settings: Settings) -> dict[str, str]:
    """Flower's basic auth goes in its environment, never its command line, which any local user can read.

    Flower 2 turns its API (``/api/workers``, ``/api/tasks``) off when it has no auth, unless
    ``FLOWER_UNAUTHENTICATED_API`` says otherwise: it is said for a Flower that listens on a loopback address
    only, where nobody but this machine's users reaches it. Anywhere else the API keeps needing credentials.
    """
    if settings.flower_basic_auth:
        return {"FLOWER_BASIC_AUTH": settings.flower_basic_auth}
    return {"FLOWER_UNAUTHENTICATED_API": "true"} if is_loopback(settings.host) else {}


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1``; a name or ``0.0.0.0`` is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
