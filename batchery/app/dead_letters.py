"""``GET /v1/dead-letters``: items that exhausted their retries, newest first.

With API keys on, a key sees the dead letters of its own jobs only (an admin sees all). Entries do not
carry their job's owner, so those are found by reading every entry and its job's owner: a key's page costs
a read of the whole list (at most ``keys.DEAD_LETTERS_MAX`` entries), a page of it per round trip.
"""

from __future__ import annotations

from typing import Any, Iterator

from flask import Blueprint, Response, request

from batchery.app import tenancy
from batchery.app.jobs import MAX_OFFSET, int_arg, json_response
from batchery.app.services import services
from batchery.store.dead_letters import DeadLetters
from batchery.store import JobStore

bp = Blueprint("dead_letters", __name__, url_prefix="/v1/dead-letters")
OWNER_PAGE = 1000


@bp.get("")
def list_dead_letters() -> Response:
    svc = services()
    letters = DeadLetters(svc.store.redis)
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    limit = int_arg("limit", 100, 1, 1000)
    model = request.args.get("model")
    if tenancy.sees_everything():
        return json_response({"dead_letters": letters.list(offset, limit, model), "total": letters.count()})
    mine = list(owned(letters.each(OWNER_PAGE), svc.store, tenancy.owner()))
    page = [entry for entry in mine[offset : offset + limit] if model is None or entry["model"] == model]
    return json_response({"dead_letters": page, "total": len(mine)})


def owned(entries: Iterator[dict[str, Any]], store: JobStore, owner: str | None) -> Iterator[dict[str, Any]]:
    """The entries whose job ``owner`` submitted; an entry whose job is gone is nobody's but an admin's."""
    page: list[dict[str, Any]] = []
    for entry in entries:
        page.append(entry)
        if len(page) == OWNER_PAGE:
            yield from _of(page, store, owner)
            page = []
    yield from _of(page, store, owner)


def _of(page: list[dict[str, Any]], store: JobStore, owner: str | None) -> Iterator[dict[str, Any]]:
    owners = store.owners(entry["job_id"] for entry in page)
    return (entry for entry in page if owners[entry["job_id"]] == owner)
