"""``GET /v1/workers``: the live, warm worker processes, and the per-device counts the other views share.

A worker is listed from its heartbeat, which it writes only once its models are loaded and warm and its
consumer is taking messages, so everything counted here can take work now.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from flask import Blueprint, Response

from batchery.app.jobs import json_response
from batchery.app.services import services

bp = Blueprint("workers", __name__, url_prefix="/v1/workers")


@bp.get("")
def list_workers() -> Response:
    workers = services().live_workers(fresh=True)
    return json_response({"workers": workers, "devices": by_device(workers)})


def device_of(worker: dict[str, Any]) -> str:
    """``cuda:1@box``: the device as the machine numbers it, on its machine, since ``cuda:1`` repeats across hosts."""
    return f"{worker.get('device', '?')}@{worker.get('host', '?')}"


def by_device(workers: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Live workers per device, in device order."""
    return dict(sorted(Counter(device_of(w) for w in workers).items()))
