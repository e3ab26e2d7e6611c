"""How a job looks to its client, wherever it is shown: the API's status document, a webhook's payload.

Links are left to the caller: the API makes them on the URL the request came by, a webhook sender on
``BATCHERY_PUBLIC_URL``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from batchery import tiers


def job(record: dict[str, Any]) -> dict[str, Any]:
    """The document of a job record as :meth:`batchery.store.JobStore.get` reads it, less its links."""
    done = record["succeeded"] + record["failed"]
    doc: dict[str, Any] = {
        "id": record["id"],
        "model": record["model"],
        "version": record["version"],
        "status": record["status"],
        "total": record["total"],
        "tier": tiers.of_job(record),
        "counts": {
            "succeeded": record["succeeded"],
            "failed": record["failed"],
            "pending": max(record["total"] - done, 0),
            "cached": record["cached"],
        },
        "created_at": iso(record["created_at"]),
        "started_at": iso(record["started_at"]),
        "finished_at": iso(record["finished_at"]),
        "deadline": iso(record["deadline"]),
    }
    if record.get("quantize"):
        doc["quantize"] = record["quantize"]
    if record.get("owner"):
        doc["owner"] = record["owner"]
    if record.get("metadata") is not None:
        doc["metadata"] = record["metadata"]
    if record.get("error"):
        doc["error"] = {"code": "job_failed", "message": record["error"]}
    if record.get("webhook"):
        doc["webhook"] = webhook(record)
    return doc


def webhook(record: dict[str, Any]) -> dict[str, Any]:
    """How the job's webhook went: ``pending`` (to be called, or called and to be called again),
    ``delivered`` or ``failed`` (given up), its attempts, and the last one's answer and time."""
    return {
        "url": record["webhook"]["url"],
        "state": record.get("webhook_state") or "pending",
        "attempts": record.get("webhook_attempts") or 0,
        "last_status": record.get("webhook_status"),
        "last_attempt_at": iso(record.get("webhook_at")),
    }


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
