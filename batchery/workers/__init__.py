"""Worker processes: the model host and its bootstep, heartbeats, cancellations, devices and the chunk task.

``app`` is the Celery app the workers run and the ``celery`` CLI loads (``celery -A batchery.workers ...``),
built on first use by :func:`batchery.workers.app.create_worker_app`: importing this package builds nothing.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from batchery.settings import get_settings
        from batchery.workers.app import create_worker_app

        globals()["app"] = built = create_worker_app(get_settings())
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
