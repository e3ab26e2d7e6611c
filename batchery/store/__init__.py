"""Where jobs and outputs live: Redis, written one pipeline per batch."""

from batchery.store.jobs import FINAL_STATUSES, ItemResult, JobStore

__all__ = ["FINAL_STATUSES", "ItemResult", "JobStore"]
