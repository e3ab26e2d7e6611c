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
    if record.get("results"):
        doc["result_files"] = result_files(record)
    return doc


def result_files(record: dict[str, Any]) -> dict[str, Any]:
    """The job's result files: ``pending`` until written once it ended, then ``written`` with each file
    (its kind, format, file id and size); :func:`link_files` adds where to read them."""
    files = [{k: f[k] for k in ("kind", "format", "id", "bytes")} for f in record.get("result_files") or []]
    return {
        "state": record.get("results_state") or "pending",
        "formats": record["results"]["formats"],
        "files": files,
        "outputs_released_at": iso(record.get("outputs_released_at")),
    }


def link_files(doc: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Each result file of a job's document with its ``url`` on ``base_url``: GET on it streams the file."""
    for found in doc.get("result_files", {}).get("files", []):
        found["url"] = f"{base_url.rstrip('/')}/v1/files/{found['id']}/content"
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
