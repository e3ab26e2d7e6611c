"""batchery: asynchronous batch inference over Celery, with a dynamic batcher in every worker."""

__version__ = "0.1.0"
