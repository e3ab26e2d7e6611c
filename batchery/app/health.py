"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response

from batchery.app.errors import error_response
from batchery.app.jobs import json_response
from batchery.app.services import services
from batchery.app.workers import by_device
from batchery.monitoring.exporter import api_collectors, scrape

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when Redis answers and every model's queue has a live, warm worker; else 503 naming what is missing.

    Either way the checks count, per model and per device, the workers that serve it now.
    """
    svc = services()
    try:
        svc.store.redis.ping()
    except Exception as exc:
        return error_response(503, "redis_unavailable", f"Redis does not answer: {exc}", checks={"redis": False})
    live = svc.live_workers(fresh=True)
    serving = {spec.key: svc.workers_for(spec) for spec in svc.registry}
    unserved = [name for name, workers in serving.items() if not workers]
    unavailable = {spec.key: reasons for spec in svc.registry if (reasons := svc.unavailable(spec))}
    checks = {
        "redis": True,
        "models": {name: bool(workers) for name, workers in serving.items()},
        "live_workers": {name: len(workers) for name, workers in serving.items()},
        "live_workers_by_device": {name: by_device(workers) for name, workers in serving.items()},
        "devices": by_device(live),
        "unavailable": unavailable,
    }
    if unserved:
        why = "; ".join(f"{name} ({_reasons(unavailable[name])})" if name in unavailable else name for name in unserved)
        return error_response(503, "no_live_worker", f"no live worker serves: {why}", checks=checks)
    return json_response({"status": "ready", "checks": checks})


@bp.get("/readyz/api")
def readyz_api() -> Response:
    """Ready when this API process can serve: Redis answers. Workers are not asked, so that a readiness probe
    (Kubernetes') keeps the API reachable while workers are scaled to zero or their nodes are still coming up:
    a job taken then waits in Redis, where its backlog is what starts a worker."""
    try:
        services().store.redis.ping()
    except Exception as exc:
        return error_response(503, "redis_unavailable", f"Redis does not answer: {exc}")
    return json_response({"status": "ready", "checks": {"redis": True}})


def _reasons(by_worker: dict[str, str]) -> str:
    return ", ".join(f"{hostname} could not load it: {reason}" for hostname, reason in sorted(by_worker.items()))


@bp.get("/metrics")
def metrics() -> Response:
    """Every API process's counts, plus queue depths and live workers read now from the broker and Redis."""
    svc = services()
    body, content_type = scrape(api_collectors(svc.celery, svc.registry, svc.store.redis))
    return Response(body, content_type=content_type)
