"""``GET /v1/dead-letters``: items that exhausted their retries, newest first."""

from __future__ import annotations

from flask import Blueprint, Response, request

from batchery.app.jobs import MAX_OFFSET, int_arg, json_response
from batchery.app.services import services
from batchery.retry.dead_letters import DeadLetters

bp = Blueprint("dead_letters", __name__, url_prefix="/v1/dead-letters")


@bp.get("")
def list_dead_letters() -> Response:
    letters = DeadLetters(services().store.redis)
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    limit = int_arg("limit", 100, 1, 1000)
    entries = letters.list(offset, limit, request.args.get("model"))
    return json_response({"dead_letters": entries, "total": letters.count()})
