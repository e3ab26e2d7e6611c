"""The Celery app (``batchery.tasks:app``, as the celery CLI expects) and its one task, the chunk."""

from batchery.settings import get_settings
from batchery.tasks.celery_app import create_celery
from batchery.tasks.chunk import CHUNK_TASK, run_chunk

app = create_celery(get_settings())

__all__ = ["CHUNK_TASK", "app", "create_celery", "run_chunk"]
