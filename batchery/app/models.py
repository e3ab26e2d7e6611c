"""``/v1/models``: what is served and by whom, and the synchronous predict convenience."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from batchery import tiers
from batchery.app import tenancy
from batchery.app.jobs import json_response
from batchery.app.requests import read_predict_request
from batchery.app.services import Services, services
from batchery.app.workers import by_device
from batchery.errors import Timeout
from batchery.models.registry import ModelSpec
from batchery.monitoring.logs import bind
from batchery.monitoring.metrics import record_submission
from batchery.store.codec import decode
from batchery.tasks.enqueue import new_job_id

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    svc = services()
    return json_response({"models": [model_document(svc, spec) for spec in svc.registry]})


@bp.get("/<name>")
def get_model(name: str) -> Response:
    svc = services()
    return json_response(model_document(svc, svc.registry.get(name)))


@bp.post("/<name>/predict")
def predict(name: str) -> Response:
    """Runs through the same queue and batcher as a job, and waits for it (504 past the timeout).

    With API keys on, it is a job of the key's like any other: held to its tier ceiling (a predict that names
    no tier runs at the ceiling) and counted into its quotas, and out again once answered.
    """
    svc = services()
    spec = svc.registry.get(name)
    inputs, tier = read_predict_request(request, spec, svc.settings, tenancy.default_tier(tiers.INTERACTIVE))
    tenancy.check_tier(tier)
    svc.require_worker(spec)
    job_id = new_job_id()
    with tenancy.admitted(svc, job_id, len(inputs)):
        svc.enqueuer.submit(spec, inputs, job_id=job_id, ttl_s=_predict_ttl(svc), tier=tier, owner=tenancy.owner())
    bind(job_id)
    record_submission(spec.name, len(inputs))
    try:
        if not svc.store.wait_done(job_id, svc.settings.predict_timeout_s):
            svc.enqueuer.cancel(job_id)
            raise Timeout(f"no answer within {svc.settings.predict_timeout_s:g}s; the request was cancelled")
    finally:
        tenancy.count_out(svc, job_id, tenancy.owner())
    outputs: list[Any] = [None] * len(inputs)
    errors = []
    for index, raw in svc.store.outputs(job_id, 0, len(inputs)):
        kind, value = decode(raw)
        if kind == "output":
            outputs[index] = value
        else:
            errors.append({"index": index, **value})
    body: dict[str, Any] = {"model": spec.ref, "outputs": outputs}
    if errors:
        body["errors"] = errors
    return json_response(body)


def model_document(svc: Services, spec: ModelSpec) -> dict[str, Any]:
    workers = svc.workers_for(spec)
    return {
        **spec.describe(),
        "device": sorted({w.get("device", "?") for w in workers}),
        "live_workers": len(workers),
        "live_workers_by_device": by_device(workers),
        "serving": bool(workers),
        "unavailable": svc.unavailable(spec),
    }


def _predict_ttl(svc: Services) -> int:
    return max(int(svc.settings.predict_timeout_s) * 4, 60)
