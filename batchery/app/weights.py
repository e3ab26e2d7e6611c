"""``/v1/models/<name>/weights``: how a model's jobs are split across its versions, and changing it live.

Reading is any key's; setting and deleting are an admin's (with API keys off, anyone's, as every route is).
The weights go to Redis (:class:`batchery.rollouts.WeightStore`), so every API process routes by them from the
next submission on, with nothing restarted.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from batchery.app import tenancy
from batchery.app.jobs import json_response
from batchery.app.requests import json_object
from batchery.app.services import Services, services
from batchery.errors import AdminRequired

bp = Blueprint("weights", __name__, url_prefix="/v1/models")


@bp.get("/<name>/weights")
def get_weights(name: str) -> Response:
    return json_response(weights_document(services(), name))


@bp.put("/<name>/weights")
def put_weights(name: str) -> Response:
    """``{"weights": {"v1": 0.8, "v2": 0.2}}``: versions left out get 0; only the ratios count."""
    svc = services()
    require_admin()
    svc.registry.get(name)
    svc.weights.set(name, json_object(request).get("weights"))
    return json_response(weights_document(svc, name))


@bp.delete("/<name>/weights")
def delete_weights(name: str) -> Response:
    """Back to the models file's weights."""
    svc = services()
    require_admin()
    svc.registry.get(name)
    svc.weights.clear(name)
    return json_response(weights_document(svc, name))


def require_admin() -> None:
    tenant = tenancy.current()
    if tenant is not None and not tenant.admin:
        raise AdminRequired(f"API key {tenant.name!r} is not an admin: only an admin key may change a model's weights")


def weights_document(svc: Services, name: str) -> dict[str, Any]:
    spec = svc.registry.get(name)
    weights, source = svc.weights.current(name)
    return {
        "model": spec.name,
        "primary": spec.version,
        "weights": weights,
        "source": source,
        "file_weights": svc.weights.file_weights(name),
        "rollbacks": svc.weights.rollbacks(name),
    }
