"""``/v1/batches``: OpenAI's Batch API over batchery's jobs.

``POST /v1/batches`` reads the input file at once (the batch is ``validating`` meanwhile): each line's texts
become items of one job at the bulk tier, owned by the request's API key and counted into its quotas like any
job, and visible as one at ``/v1/jobs/<id>`` (its ``metadata`` names the batch). Lines that cannot be read are
the batch's ``errors``, by line number, and never stop the others. The job runs; looking at the batch brings it
up to date (:mod:`batchery.app.openai.lifecycle`), and once the job is done, writes its output and error files.
"""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, request

from batchery import tiers
from batchery.app import tenancy
from batchery.app.jobs import int_arg, json_response
from batchery.app.openai.files import listing, visible_file
from batchery.app.openai.lifecycle import cancel, refresh
from batchery.app.requests import json_object
from batchery.app.services import Services, services
from batchery.errors import BadRequest, BatchNotFound
from batchery.monitoring.metrics import record_submission
from batchery.openai_compat.finalize import blob_names
from batchery.openai_compat.plan import ENDPOINTS, Plan, plan_batch
from batchery.store.batches import new_batch_id
from batchery.tasks.enqueue import new_job_id

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")
BATCH_ID = re.compile(r"batch_[0-9a-f]{32}")
WINDOWS = {"24h": 24 * 3600}
#: OpenAI's bounds on a batch's metadata.
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
LIST_LIMIT = 100


@bp.post("")
def create_batch() -> Response:
    svc = services()
    body = json_object(request)
    endpoint, window, metadata = _read(body)
    named = body.get("input_file_id")
    source = visible_file(named if isinstance(named, str) else "", param="input_file_id")
    if source["purpose"] != "batch":
        raise BadRequest(f"file {source['id']!r} was not uploaded with purpose 'batch'", param="input_file_id")
    tier = tenancy.default_tier(tiers.BULK)
    tenancy.check_tier(tier)
    batch_id, now = new_batch_id(), int(time.time())
    svc.batches.create(
        batch_id,
        {
            "status": "validating",
            "endpoint": endpoint,
            "input_file_id": source["id"],
            "completion_window": window,
            "created_at": now,
            "expires_at": now + WINDOWS[window],
            "job_id": new_job_id(),
            "owner": tenancy.owner(),
            "metadata": metadata,
        },
    )
    with svc.files.blobs.writing(blob_names(batch_id)["plan"]) as out, svc.files.blobs.open(source["blob"]) as lines:
        plan = plan_batch(lines, out, endpoint, svc.registry, svc.settings)
    batch = svc.batches.get(batch_id)
    _submit(svc, batch, plan, tier, WINDOWS[window])
    return _answer(svc, svc.batches.get(batch_id) or batch)


def _submit(svc: Services, batch: dict[str, Any], plan: Plan, tier: str, window_s: int) -> None:
    """Queue the plan's inputs as the batch's job; a batch with none to queue, or whose job is refused (a quota,
    a full backlog, no worker), fails, and a refusal is also the request's answer."""
    found = {
        "errors": plan.errors,
        "error_lines": plan.error_lines,
        "requests": plan.requests,
        "items": len(plan.inputs),
        "model": plan.spec.ref if plan.spec else None,
    }
    svc.batches.update(batch["id"], found)
    if not plan.inputs:
        _failed(svc, batch, plan, "no_requests", "no line of the input file is a request that can be run")
        return
    job_id = batch["job_id"]
    try:
        svc.require_worker(plan.spec)
        with tenancy.admitted(svc, job_id, len(plan.inputs)):
            svc.enqueuer.submit(
                plan.spec,
                plan.inputs,
                job_id=job_id,
                metadata={"batch_id": batch["id"]},
                timeout_s=window_s,
                tier=tier,
                owner=tenancy.owner(),
            )
    except Exception as exc:
        _failed(svc, batch, plan, getattr(exc, "code", "internal"), f"the batch's job was not queued: {exc}")
        raise
    record_submission(plan.spec.key, len(plan.inputs))
    svc.batches.update(batch["id"], {"status": "in_progress", "in_progress_at": int(time.time())}, ("in_progress_at",))


def _failed(svc: Services, batch: dict[str, Any], plan: Plan, code: str, message: str) -> None:
    errors = [*plan.errors, {"code": code, "line": None, "message": message, "param": None}]
    svc.batches.update(batch["id"], {"status": "failed", "failed_at": int(time.time()), "errors": errors})


def _read(body: dict[str, Any]) -> tuple[str, str, dict[str, str] | None]:
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise BadRequest(f"'endpoint' must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}", param="endpoint")
    window = body.get("completion_window")
    if not isinstance(window, str) or window not in WINDOWS:
        raise BadRequest(
            f"'completion_window' must be one of {', '.join(WINDOWS)}, not {window!r}", param="completion_window"
        )
    return endpoint, window, _metadata(body.get("metadata"))


def _metadata(value: Any) -> dict[str, str] | None:
    """As OpenAI takes it: at most 16 pairs of strings, keys of 64 characters at most and values of 512."""
    if value is None:
        return None
    fits = (
        isinstance(value, dict)
        and len(value) <= METADATA_KEYS
        and all(
            len(k) <= METADATA_KEY_CHARS and isinstance(v, str) and len(v) <= METADATA_VALUE_CHARS
            for k, v in value.items()
        )
    )
    if not fits:
        raise BadRequest(
            f"'metadata' must be an object of at most {METADATA_KEYS} string values, keys of at most "
            f"{METADATA_KEY_CHARS} characters and values of at most {METADATA_VALUE_CHARS}",
            param="metadata",
        )
    return value


@bp.get("")
def list_batches() -> Response:
    svc = services()
    limit = int_arg("limit", 20, 1, LIST_LIMIT)
    owner = None if tenancy.sees_everything() else tenancy.owner()
    found, more = svc.batches.list(owner, request.args.get("after"), limit)
    return json_response(listing([_object(*refresh(svc, batch)) for batch in found], more))


@bp.get("/<batch_id>")
def get_batch(batch_id: str) -> Response:
    svc = services()
    return _answer(svc, _visible(svc, batch_id))


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    """Its job is cancelled; the requests that finished stay, in the output file, once the batch is cancelled."""
    svc = services()
    batch, _ = refresh(svc, _visible(svc, batch_id))
    cancel(svc, batch)
    tenancy.count_out(svc, batch["job_id"], batch.get("owner"))
    return _answer(svc, batch)


def _answer(svc: Services, batch: dict[str, Any]) -> Response:
    return json_response(_object(*refresh(svc, batch)))


def _visible(svc: Services, batch_id: str) -> dict[str, Any]:
    batch = svc.batches.get(batch_id) if BATCH_ID.fullmatch(batch_id) else None
    if batch is None or not tenancy.sees(batch):
        raise BatchNotFound(f"no batch {batch_id!r} (it never existed, or it expired)", param="batch_id")
    return batch


TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _object(batch: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    """The batch as OpenAI's clients read it, plus ``job_id``: the batchery job that runs it."""
    errors = batch.get("errors") or []
    return {
        "id": batch["id"],
        "object": "batch",
        "endpoint": batch["endpoint"],
        "model": batch.get("model"),
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": batch["input_file_id"],
        "completion_window": batch["completion_window"],
        "status": batch["status"],
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        **{name: batch.get(name) for name in TIMES},
        "request_counts": _counts(batch, job),
        "metadata": batch.get("metadata"),
        "job_id": batch["job_id"],
    }


def _counts(batch: dict[str, Any], job: dict[str, Any] | None) -> dict[str, int]:
    """Once the files are written, exact. Before, the lines that could not be read are failed, and where every
    request has one input (its item's counts are its own) the job's counts tell the rest; otherwise a request
    with many inputs is counted once its files are written."""
    requests, error_lines = batch.get("requests") or 0, batch.get("error_lines") or 0
    total = requests + error_lines
    if batch.get("completed") is not None:
        return {"total": total, "completed": batch["completed"], "failed": batch["failed"]}
    if job is not None and job["total"] == requests:
        return {"total": total, "completed": job["succeeded"], "failed": error_lines + job["failed"]}
    return {"total": total, "completed": 0, "failed": error_lines}
