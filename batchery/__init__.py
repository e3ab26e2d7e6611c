"""batchery: asynchronous batch inference over Celery, with a dynamic batcher in every worker."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """``batchery.Client`` is imported on first use: importing batchery (as every process of the service
    does) loads no HTTP client."""
    if name in ("Client", "ApiError", "JobFailed"):
        from batchery import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
