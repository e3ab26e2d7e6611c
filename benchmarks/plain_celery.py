"""The baseline: plain Celery, one task per item, the way most Celery inference services start out.

Redis is both broker and result backend and everything is JSON, as in batchery, so the comparison measures
what batchery's design buys (chunks, a batcher, results in one hash) rather than a faster serializer.

The worker runs ``celery -A benchmarks.plain_celery worker``; the Redis URL comes from
``BENCHMARKS_REDIS_URL`` and there is deliberately no default, so this app can never fall back to the Redis
on port 6379. The module's ``app`` is built on first access (Celery's ``-A`` lookup reads it), so the
benchmark client can import :func:`create_app` without the variable set.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Sequence

from celery import Celery

REDIS_URL_ENV = "BENCHMARKS_REDIS_URL"
ECHO_TASK = "benchmarks.echo"


def create_app(redis_url: str) -> Celery:
    """A Celery app with one ``echo`` task; Celery's defaults otherwise (prefetch, early acks)."""
    app = Celery("benchmarks.plain_celery", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=ECHO_TASK)(echo)  # one module-level function, so several apps in a process share it
    return app


def echo(value: Any) -> Any:
    """The task: the item back, so that the baseline costs nothing but Celery's own overhead."""
    return value


def redis_url_from_env() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise RuntimeError(f"set {REDIS_URL_ENV} to the benchmark's private Redis (there is no default on purpose)")
    return url


@functools.cache
def _app_from_env() -> Celery:
    return create_app(redis_url_from_env())


def __getattr__(name: str) -> Any:
    """``app`` (what ``celery -A benchmarks.plain_celery`` looks up), built from the environment on first use."""
    if name == "app":
        return _app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_client(app: Celery, inputs: Sequence[Any], timeout_s: float = 600.0) -> tuple[float, list[Any]]:
    """Send one task per input with ``apply_async``, then ``.get()`` each result in order.

    Returns the wall time from the first send to the last result and the results themselves.
    """
    task = app.tasks[ECHO_TASK]
    started = time.perf_counter()
    pending = [task.apply_async((value,)) for value in inputs]
    results = [result.get(timeout=timeout_s) for result in pending]
    elapsed = time.perf_counter() - started
    for result in pending:
        result.forget()  # drop the result keys so a later measurement starts from the same Redis
    return elapsed, results
