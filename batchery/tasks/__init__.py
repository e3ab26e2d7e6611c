"""What the API sends: the Celery app's configuration, and jobs turned into chunks, sent by task name.

The code that runs a chunk lives with the workers (:mod:`batchery.workers.chunk_task`); the Celery app the
workers and the ``celery`` CLI load is :mod:`batchery.workers`'s ``app``.
"""

from batchery.tasks.celery_app import create_celery
from batchery.tasks.names import CHUNK_TASK

__all__ = ["CHUNK_TASK", "create_celery"]
