"""The Celery app of the worker processes (and of the ``celery`` CLI): the app the API sends with, plus what
runs the chunks: the bootstep that owns the models and the chunk task.

This is the one place that wires them: nothing is built on import but through :func:`create_worker_app`, and
``batchery.workers.app`` (the attribute, as ``celery -A batchery.workers`` asks for it) builds it on first use.
"""

from __future__ import annotations

from celery import Celery

from batchery.settings import Settings
from batchery.tasks.celery_app import create_celery
from batchery.workers import chunk_task
from batchery.workers.bootstep import ModelHostStep
from batchery.workers.wakeup import SignalWakeup


def create_worker_app(settings: Settings) -> Celery:
    """The app with the model host's bootstep and the consumer's signal wakeup; the chunk task (a
    ``shared_task``) joins it when it finalizes."""
    app = create_celery(settings)
    app.steps["worker"].add(ModelHostStep)
    app.steps["consumer"].add(SignalWakeup)
    assert chunk_task.run_chunk.name == chunk_task.CHUNK_TASK
    return app
