"""How jobs look on the wire: the status document and its links."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import url_for

from batchery import tiers


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.get_job", job_id=job_id, _external=True),
        "results": url_for("jobs.get_results", job_id=job_id, _external=True),
    }


def job_document(job: dict[str, Any]) -> dict[str, Any]:
    done = job["succeeded"] + job["failed"]
    doc = {
        "id": job["id"],
        "model": job["model"],
        "version": job["version"],
        "status": job["status"],
        "total": job["total"],
        "tier": tiers.of_job(job),
        "counts": {
            "succeeded": job["succeeded"],
            "failed": job["failed"],
            "pending": max(job["total"] - done, 0),
            "cached": job["cached"],
        },
        "created_at": iso(job["created_at"]),
        "started_at": iso(job["started_at"]),
        "finished_at": iso(job["finished_at"]),
        "deadline": iso(job["deadline"]),
        "links": job_links(job["id"]),
    }
    if job.get("metadata") is not None:
        doc["metadata"] = job["metadata"]
    if job.get("error"):
        doc["error"] = {"code": "job_failed", "message": job["error"]}
    return doc


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
