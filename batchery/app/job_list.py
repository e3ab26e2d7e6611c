"""``GET /v1/jobs``: the jobs a request may see, newest first, filtered by status and model, a page at a time.

The list is read from the recent-jobs index (:func:`batchery.keys.recent_jobs`), or, for an API key that is no
admin, from the key's own (:func:`batchery.keys.tenant_recent`). Both are trimmed to
:data:`batchery.keys.RECENT_JOBS`, so the list holds the newest that many jobs; an older one is still reached
by its id. Each request reads at most :data:`SCAN_MAX` index entries, their status, model and version, and the
whole records of the jobs it returns, so a filter that matches little costs a bounded read: the page is then
shorter than asked, and ``next`` says where to go on.

The cursor is the last ``(created_at, id)`` looked at, so a page does not shift when jobs are submitted
between two requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Request

from batchery.app import tenancy
from batchery.app.services import Services
from batchery.errors import BadRequest
from batchery.store.jobs import STATUSES

LIMIT_DEFAULT = 50
LIMIT_MAX = 200
#: Index entries one request looks at, at most (in pages of SCAN_PAGE).
SCAN_MAX = 1000
SCAN_PAGE = 200
#: ``<created_at>_<job id>``, as :func:`cursor_of` writes it (and as the OpenAPI description has it).
CURSOR = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?_[0-9a-f]{32}")


@dataclass(frozen=True)
class Filter:
    statuses: frozenset[str]
    model: str | None = None
    version: str | None = None

    def keeps(self, status: str, model: str, version: str) -> bool:
        return (
            (not self.statuses or status in self.statuses)
            and (self.model is None or model == self.model)
            and (self.version is None or version == self.version)
        )


def read_filter(request: Request) -> Filter:
    """``?status=completed,failed`` (any of them) and ``?model=name`` or ``name@version``."""
    named = request.args.get("status")
    statuses = frozenset(named.split(",")) if named is not None else frozenset()
    unknown = sorted(statuses - set(STATUSES))
    if unknown:
        raise BadRequest(f"unknown status {unknown[0]!r} in 'status': a job's status is one of {', '.join(STATUSES)}")
    model = request.args.get("model")
    if model is None:
        return Filter(statuses)
    name, _, version = model.partition("@")
    if not name or (not version and model.endswith("@")):
        raise BadRequest("'model' must be a model's name or name@version")
    return Filter(statuses, name, version or None)


def read_cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    if CURSOR.fullmatch(raw) is None:
        raise BadRequest("'cursor' must be a value that a 'next' link of GET /v1/jobs carried")
    at, _, job_id = raw.partition("_")
    return float(at), job_id


def cursor_of(job_id: str, created_at: float) -> str:
    return f"{created_at!r}_{job_id}"


def find(svc: Services, wanted: Filter, limit: int, before: tuple[float, str] | None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` jobs this request may see that ``wanted`` keeps, older than ``before``; and the cursor of
    the next page, None when the index has no more."""
    owner = None if tenancy.sees_everything() else tenancy.owner()
    matches: list[str] = []
    scanned = 0
    last: tuple[float, str] | None = before
    while scanned < SCAN_MAX:
        page = svc.store.recent_page(min(SCAN_PAGE, SCAN_MAX - scanned), owner, last)
        if not page:
            return _records(svc, matches), None
        for (job_id, created_at), summary in zip(page, svc.store.summaries([job_id for job_id, _ in page])):
            scanned += 1
            last = (created_at, job_id)
            if summary is not None and wanted.keeps(*summary[1:]):
                matches.append(job_id)
                if len(matches) == limit:
                    return _records(svc, matches), cursor_of(job_id, created_at)
    assert last is not None
    return _records(svc, matches), cursor_of(last[1], last[0])


def _records(svc: Services, job_ids: list[str]) -> list[dict[str, Any]]:
    return [job for job in svc.store.get_many(job_ids) if tenancy.sees(job)]
