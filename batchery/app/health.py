"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response

from batchery.app.errors import error_response
from batchery.app.jobs import json_response
from batchery.app.services import services
from batchery.monitoring.exporter import api_collectors, scrape

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when Redis answers and every model's queue has a live worker; else 503 naming what is missing."""
    svc = services()
    try:
        svc.store.redis.ping()
    except Exception as exc:
        return error_response(503, "redis_unavailable", f"Redis does not answer: {exc}", checks={"redis": False})
    unserved = [spec.name for spec in svc.registry if not svc.workers_for(spec, fresh=True)]
    checks = {"redis": True, "models": {spec.name: spec.name not in unserved for spec in svc.registry}}
    if unserved:
        return error_response(503, "no_live_worker", f"no live worker serves: {', '.join(unserved)}", checks=checks)
    return json_response({"status": "ready", "checks": checks})


@bp.get("/metrics")
def metrics() -> Response:
    """Every API process's counts, plus queue depths and live workers read now from the broker and Redis."""
    svc = services()
    body, content_type = scrape(api_collectors(svc.celery, svc.registry, svc.store.redis))
    return Response(body, content_type=content_type)
