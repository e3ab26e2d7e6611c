"""``/v1/models``: what is served and by whom, and the synchronous predict convenience."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from batchery import tiers
from batchery.app import tenancy
from batchery.app.inline import run_now
from batchery.app.jobs import json_response
from batchery.app.requests import read_predict_request
from batchery.app.services import Services, services
from batchery.app.workers import by_device
from batchery.models.registry import ModelSpec

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
    default_tier = tenancy.default_tier(tiers.INTERACTIVE)
    inputs, tier, routing_key = read_predict_request(request, spec, svc.settings, default_tier)
    tenancy.check_tier(tier)
    outputs: list[Any] = [None] * len(inputs)
    errors = []
    spec, results = run_now(svc, name, inputs, tier, routing_key)
    for index, (kind, value) in enumerate(results):
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
    weights, _ = svc.weights.current(spec.name)
    return {
        **spec.describe(),
        "device": sorted({w.get("device", "?") for w in workers}),
        "live_workers": len(workers),
        "live_workers_by_device": by_device(workers),
        "serving": bool(workers),
        "unavailable": svc.unavailable(spec),
        "weight": weights.get(spec.version, 0.0),
    }

