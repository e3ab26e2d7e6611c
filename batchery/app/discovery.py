"""What a client reads first: the index at ``/v1`` and the OpenAPI description at ``/openapi.json``.

``/`` itself is the jobs page, for people; programs start here.
"""

from __future__ import annotations

from flask import Blueprint, Response

from batchery import __version__
from batchery.app.jobs import json_response
from batchery.app.openapi import describe
from batchery.app.services import services
from batchery.app.views import external_url

bp = Blueprint("discovery", __name__)


@bp.get("/v1")
def index() -> Response:
    links = {name: external_url(endpoint) for name, endpoint in (
        ("openapi", "discovery.openapi"), ("models", "models.list_models"), ("jobs", "jobs.create_job"),
        ("workers", "workers.list_workers"),
        ("healthz", "health.healthz"), ("readyz", "health.readyz"), ("readyz_api", "health.readyz_api"),
        ("metrics", "health.metrics"),
    )}
    return json_response({"name": "batchery", "version": __version__, "links": links})


@bp.get("/openapi.json")
def openapi() -> Response:
    svc = services()
    return json_response(describe(svc.settings, svc.registry))
