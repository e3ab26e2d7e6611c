"""The baselines: plain Celery, the way most Celery inference services are written by hand.

- one task per item (``echo``): how most services start out;
- one task per list of items (``echo_list``, 256 by default): what a competent Celery user writes once the
  per-message cost shows, an ``apply_async`` of a task whose argument is a list and a ``.get()`` of the list.

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
ECHO_LIST_TASK = "benchmarks.echo_list"


def create_app(redis_url: str) -> Celery:
    """A Celery app with the ``echo`` and ``echo_list`` tasks; Celery's defaults otherwise (prefetch, early acks)."""
    app = Celery("benchmarks.plain_celery", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=ECHO_TASK)(echo)  # module-level functions, so several apps in a process share them
    app.task(name=ECHO_LIST_TASK)(echo_list)
    return app


def echo(value: Any) -> Any:
    """The task: the item back, so that the baseline costs nothing but Celery's own overhead."""
    return value


def echo_list(values: list[Any]) -> list[Any]:
    """The list task: the items back, so that the baseline costs one message and one result per list."""
    return values


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


def run_client(
    app: Celery, inputs: Sequence[Any], task_items: int = 1, timeout_s: float = 600.0
) -> tuple[float, list[Any]]:
    """Send the inputs with ``apply_async``, then ``.get()`` each result in order: one ``echo`` task per input
    when ``task_items`` is 1, else one ``echo_list`` task per ``task_items`` inputs (the last one shorter).

    Returns the wall time from the first send to the last result and the outputs, one per input.
    """
    started = time.perf_counter()
    if task_items == 1:
        pending = [app.tasks[ECHO_TASK].apply_async((value,)) for value in inputs]
        outputs = [result.get(timeout=timeout_s) for result in pending]
    else:
        task = app.tasks[ECHO_LIST_TASK]
        pending = [task.apply_async((list(inputs[i : i + task_items]),)) for i in range(0, len(inputs), task_items)]
        outputs = [value for result in pending for value in result.get(timeout=timeout_s)]
    elapsed = time.perf_counter() - started
    for result in pending:
        result.forget()  # drop the result keys so a later measurement starts from the same Redis
    return elapsed, outputs
