"""``GET /v1/overview``: everything the jobs page shows, in one document it polls about once a second.

Recent jobs with their progress, each model's throughput and batch fill over the last seconds, and the live
workers grouped by device. Every part is a fixed number of Redis round trips, whatever the load.

With API keys on, the jobs are the key's own (an admin's are everyone's); the rest is about models and
workers, and is the same for every key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, url_for

from batchery import tiers
from batchery.app import tenancy
from batchery.app.jobs import int_arg, json_response
from batchery.app.services import Services, services
from batchery.app.views import base_url
from batchery.documents import iso
from batchery.store.activity import MAX_WINDOW_S, WINDOW_S, read_activity
from batchery.settings import Settings
from batchery.store.chunks import ChunkStore

bp = Blueprint("overview", __name__, url_prefix="/v1/overview")
JOBS_DEFAULT = 20
JOBS_MAX = 200


@bp.get("")
def overview() -> Response:
    svc = services()
    limit = int_arg("jobs", JOBS_DEFAULT, 1, JOBS_MAX)
    window_s = int_arg("window_s", WINDOW_S, 1, MAX_WINDOW_S)
    workers = svc.live_workers()
    return json_response(
        {
            "jobs": [job_summary(job) for job in svc.store.get_many(recent_jobs(svc, limit))],
            "models": model_activity(svc, workers, window_s),
            "tiers": tier_activity(svc),
            "devices": workers_by_device(workers),
            "links": {"flower": flower_url(svc.settings, base_url()), "metrics": url_for("health.metrics")},
        }
    )


def recent_jobs(svc: Services, limit: int) -> list[str]:
    """The newest jobs this request may see: every job, or its key's own."""
    return svc.store.recent(limit, None if tenancy.sees_everything() else tenancy.owner())


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    done = job["succeeded"] + job["failed"]
    summary: dict[str, Any] = {
        "id": job["id"],
        "model": job["model"],
        "version": job["version"],
        "status": job["status"],
        "tier": tiers.of_job(job),
        "total": job["total"],
        "succeeded": job["succeeded"],
        "failed": job["failed"],
        "cached": job["cached"],
        "progress": round(done / job["total"], 4) if job["total"] else 1.0,
        "created_at": iso(job["created_at"]),
        "started_at": iso(job["started_at"]),
        "finished_at": iso(job["finished_at"]),
        "links": {"self": url_for("jobs.get_job", job_id=job["id"])},
    }
    if job.get("owner"):
        summary["owner"] = job["owner"]
    return summary


def model_activity(svc: Services, workers: list[dict[str, Any]], window_s: int) -> list[dict[str, Any]]:
    specs = list(svc.registry)
    activity = read_activity(svc.store.redis, [spec.key for spec in specs], window_s)
    return [
        {
            "name": spec.name,
            "ref": spec.ref,
            "synthetic": spec.synthetic,
            "max_batch_size": spec.max_batch_size,
            "live_workers": sum(set(spec.queues) <= set(w.get("queues", [])) for w in workers),
            **activity[spec.key].as_dict(),
        }
        for spec in specs
    ]


#: How many recent jobs the tiers' latency is read from.
TIER_JOBS = 200


def tier_activity(svc: Services) -> list[dict[str, Any]]:
    """Per model and tier: chunks waiting in the broker, running in workers and held back in its lane (with
    the jobs they belong to), and the p95 of the latency of its recently finished jobs."""
    chunks = ChunkStore(svc.store.redis)
    latencies: dict[tuple[str, str], list[float]] = {}
    for job in svc.store.get_many(svc.store.recent(TIER_JOBS)):
        if job["finished_at"] is not None and job["status"] == "completed":
            ref = f"{job['model']}@{job['version']}"
            latencies.setdefault((ref, tiers.of_job(job)), []).append(job["finished_at"] - job["created_at"])
    rows = []
    for spec in svc.registry:
        for tier in tiers.TIERS:
            backlog = chunks.backlog(spec.queue_for(tier))
            done = sorted(latencies.get((spec.ref, tier), []))
            rows.append({
                "model": spec.key, "tier": tier, **backlog,
                "recent_jobs": len(done), "p95_s": round(done[int(0.95 * (len(done) - 1))], 3) if done else None,
            })
    return rows


def workers_by_device(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    devices: dict[str, list[dict[str, Any]]] = {}
    for worker in workers:
        devices.setdefault(worker.get("device", "?"), []).append(
            {
                "hostname": worker.get("hostname"),
                "pid": worker.get("pid"),
                "models": worker.get("models", []),
                "cuda_visible_devices": worker.get("cuda_visible_devices"),
                "started_at": iso(worker["started_at"]) if worker.get("started_at") else None,
            }
        )
    return [{"device": device, "workers": devices[device]} for device in sorted(devices)]


def flower_url(settings: Settings, host_url: str) -> str:
    """``BATCHERY_FLOWER_URL``, or Flower's port on the host the browser reached the API by (or the public URL's)."""
    if settings.flower_url:
        return settings.flower_url
    parts = urlsplit(host_url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{settings.flower_port}/"
