"""The GPU baseline: plain Celery, one task per item, each task embedding its one text with the same model.

This is how most Celery inference services start: a model loaded in every pool process (after the fork, as
CUDA requires), one ``apply_async`` per text and one ``AsyncResult.get()`` per result, the vector returned as
a JSON list. The worker runs ``celery -A benchmarks.gpu.plain worker``; it reads the model and the device
from batchery's own settings (``BATCHERY_MODELS_FILE``, ``BATCHERY_WORKER_DEVICE``), so it runs exactly the
model the batchery worker runs, on the same device. The Redis URL comes from ``BENCHMARKS_REDIS_URL``.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from typing import Any, Sequence

from celery import Celery
from celery.signals import worker_process_init

from benchmarks import plain_celery

EMBED_TASK = "benchmarks.embed"
#: Loading torch and the model in a fresh pool process can take longer than Celery's 4 s default.
PROCESS_START_TIMEOUT_S = 300.0

log = logging.getLogger(__name__)
_lock = threading.Lock()


def create_app(redis_url: str) -> Celery:
    app = plain_celery.create_app(redis_url)
    app.conf.worker_proc_alive_timeout = PROCESS_START_TIMEOUT_S
    app.task(name=EMBED_TASK)(embed)
    return app


@functools.cache
def _runtime() -> Any:
    """The minilm runtime of this process, loaded and warmed once, as the batchery worker loads it."""
    from batchery.models.registry import load_registry
    from batchery.runtimes import load_runtime
    from batchery.settings import get_settings

    settings = get_settings()
    spec = load_registry(settings.models_file).get("minilm").on_device(settings.worker_device)
    runtime = load_runtime(spec, settings.worker_device, settings)
    runtime.warm_up()
    log.info("minilm loaded on %s in process for plain Celery", runtime.device)
    return runtime


def embed(text: str) -> list[float]:
    """The task: one text in, its embedding out as JSON."""
    with _lock:  # a threads pool shares one model; a prefork process has one thread anyway
        runtime = _runtime()
        (vector,) = runtime.run(runtime.prepare([text]))
    return vector.tolist()


@worker_process_init.connect
def _load_in_pool_process(**_: Any) -> None:
    """Load in each prefork child after the fork, before it takes a task (CUDA must not cross a fork)."""
    _runtime()


@functools.cache
def _app_from_env() -> Celery:
    return create_app(plain_celery.redis_url_from_env())


def __getattr__(name: str) -> Any:
    """``app``, for ``celery -A benchmarks.gpu.plain``, built from the environment on first use."""
    if name == "app":
        return _app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def warm(app: Celery, texts: Sequence[str], count: int, timeout_s: float = 600.0) -> None:
    """``count`` tasks at once, so that every pool process has loaded its model before the clock starts."""
    task = app.tasks[EMBED_TASK]
    for result in [task.apply_async((texts[i % len(texts)],)) for i in range(count)]:
        result.get(timeout=timeout_s)
        result.forget()


def run_for(app: Celery, texts: Sequence[str], seconds: float, window: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """Keep ``window`` tasks in flight for ``seconds``, one per text (cycling), then drain; count what came back."""
    task = app.tasks[EMBED_TASK]
    pending: collections.deque[Any] = collections.deque()
    sent = done = 0
    started = time.perf_counter()
    while True:
        while len(pending) < window and time.perf_counter() - started < seconds:
            pending.append(task.apply_async((texts[sent % len(texts)],)))
            sent += 1
        if not pending:
            break
        result = pending.popleft()
        vector = result.get(timeout=timeout_s)
        result.forget()
        if len(vector) != 384:
            raise RuntimeError(f"the plain Celery task returned {len(vector)} numbers, not 384")
        done += 1
    elapsed = time.perf_counter() - started
    return {"items": done, "seconds": round(elapsed, 4), "items_per_s": round(done / elapsed, 1), "window": window}
