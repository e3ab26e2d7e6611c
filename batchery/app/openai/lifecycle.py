"""Where a batch stands, read from its record and its job whenever a client looks at it.

    validating  ─► in_progress ─► finalizing ─► completed | expired
         │             └─ cancel ─► cancelling ──► cancelled
         └─► failed (no line could be read, or the job could not be queued)

The job does the work; the batch follows it. When a look finds the job finished (every item has a result, or a
cancelled job's stragglers had :data:`CANCEL_GRACE_S` to land), the process that takes the batch's finalizing
lease writes its files on a thread of its own (:mod:`batchery.openai_compat.finalize`), and the look answers
``finalizing`` at once. A process that dies meanwhile lets the lease lapse, and a later look starts over. So the
files are written when someone polls, as OpenAI's clients do until the batch ends.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from batchery.app.services import Services
from batchery.errors import DeadlineExceeded
from batchery.openai_compat.finalize import finalize
from batchery.store.batches import FINAL
from batchery.store.codec import encode_error
from batchery.store.jobs import CANCEL_GRACE_S

log = logging.getLogger(__name__)
#: A batch still validating this long after it was created lost the process that validated it.
VALIDATING_STALE_S = 3600


def refresh(svc: Services, batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The batch brought up to date with its job (and its files started when the job is done), and the job."""
    if batch["status"] in FINAL:
        return batch, None
    job = svc.store.get(batch["job_id"])
    now = time.time()
    if batch["status"] == "validating":
        if job is not None:
            svc.batches.update(batch["id"], {"status": "in_progress", "in_progress_at": int(now)}, ("in_progress_at",))
        elif now - batch["created_at"] > VALIDATING_STALE_S:
            _fail(
                svc, batch, "validation_interrupted", "the process that read the input file stopped before it was done"
            )
        return _reread(svc, batch), job
    if job is None:
        _fail(svc, batch, "job_expired", "the batch's job is gone (it outlived the job TTL)")
        return _reread(svc, batch), None
    if job["status"] == "failed":
        _fail(svc, batch, "job_failed", job.get("error") or "the batch's job failed")
        return _reread(svc, batch), job
    job = _end_overdue(svc, job, now)
    if _done(job, now):
        _start_files(svc, batch, job, now)
    return _reread(svc, batch), job


def cancel(svc: Services, batch: dict[str, Any]) -> None:
    """Stop the batch's job; what finished stays, and goes to the output file."""
    if batch["status"] not in ("validating", "in_progress"):
        return
    svc.batches.update(batch["id"], {"status": "cancelling", "cancelling_at": int(time.time())}, ("cancelling_at",))
    svc.enqueuer.cancel(batch["job_id"])


def _done(job: dict[str, Any], now: float) -> bool:
    if job["status"] not in ("completed", "cancelled"):
        return False
    pending = job["total"] - job["succeeded"] - job["failed"]
    return pending <= 0 or (job["status"] == "cancelled" and now - (job.get("cancelled_at") or now) > CANCEL_GRACE_S)


def _end_overdue(svc: Services, job: dict[str, Any], now: float) -> dict[str, Any]:
    """Items still pending past the completion window end as ``deadline_exceeded`` (the batch ``expired``)."""
    overdue = job["deadline"] is not None and now > job["deadline"]
    if overdue and job["succeeded"] + job["failed"] < job["total"]:
        svc.store.fail_missing(job["id"], job["total"], encode_error(DeadlineExceeded()))
        return svc.store.get(job["id"]) or job
    return job


def _start_files(svc: Services, batch: dict[str, Any], job: dict[str, Any], now: float) -> None:
    fields: dict[str, Any] = {"finalizing_at": int(now)}
    if batch["status"] == "in_progress":
        fields["status"] = "finalizing"
    if job["status"] == "cancelled":  # cancelled as a job (DELETE /v1/jobs/<id>): the batch is cancelled too
        fields["cancelling_at"] = int(job.get("cancelled_at") or now)
        fields["status"] = "cancelling"
    svc.batches.update(batch["id"], fields, ("finalizing_at", "cancelling_at"))
    token = uuid.uuid4().hex
    if svc.batches.take_lease(batch["id"], token):
        threading.Thread(
            target=_write_files, args=(svc, batch["id"], token), name=f"finalize-{batch['id']}", daemon=True
        ).start()


def _write_files(svc: Services, batch_id: str, token: str) -> None:
    batch = svc.batches.get(batch_id)
    if batch is None or batch["status"] in FINAL:  # another process ended it since this one looked
        return
    try:
        if finalize(batch, svc.store, svc.files, svc.batches, token, svc.settings.result_files_keep_s):
            log.info("batch %s: files written", batch_id)
    except FileNotFoundError as exc:
        log.error("batch %s: its plan is gone (%s); it cannot be finished", batch_id, exc)
        _fail(svc, batch, "plan_lost", "the batch's plan of its input lines is gone; its results are in its job")
    except Exception:
        log.exception("batch %s: writing its files failed; the next look at it tries again", batch_id)


def _fail(svc: Services, batch: dict[str, Any], code: str, message: str) -> None:
    errors = list(batch.get("errors") or []) + [{"code": code, "line": None, "message": message, "param": None}]
    svc.batches.update(batch["id"], {"status": "failed", "failed_at": int(time.time()), "errors": errors})


def _reread(svc: Services, batch: dict[str, Any]) -> dict[str, Any]:
    return svc.batches.get(batch["id"]) or batch
