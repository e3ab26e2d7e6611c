"""Prometheus metrics of the API process.

Under gunicorn each worker process counts on its own; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``batchery
api`` sets it to a fresh folder) the scrape endpoint merges every process's files, as prometheus-client's
multiprocess mode prescribes.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

JOBS_SUBMITTED = Counter("batchery_jobs_submitted_total", "Jobs accepted by the API.", ["model"])
ITEMS_SUBMITTED = Counter("batchery_items_submitted_total", "Items accepted by the API.", ["model"])


def record_submission(model: str, items: int) -> None:
    JOBS_SUBMITTED.labels(model).inc()
    ITEMS_SUBMITTED.labels(model).inc(items)


def scrape() -> tuple[bytes, str]:
    """The exposition text of this process, or of every process in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
