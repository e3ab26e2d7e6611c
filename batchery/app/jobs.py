"""``/v1/jobs``: submit, list, poll, read results, cancel.

With API keys on, a job is its submitter's (:mod:`batchery.app.tenancy`): every other key but an admin is
told 404 about it, on every route here, as about a job that never was.
"""

from __future__ import annotations

import re
import time

from flask import Blueprint, Response, request, stream_with_context

from batchery import tiers
from batchery.app import follow, job_list, tenancy
from batchery.app.requests import NDJSON, read_job_request
from batchery.app.services import services
from batchery.app.views import external_url, job_document, job_links
from batchery.errors import BadRequest, DeadlineExceeded, JobNotFound, ResultsInFiles, Unavailable
from batchery.monitoring.logs import bind
from batchery.monitoring.metrics import record_submission
from batchery.store.codec import FRAMES, dumps, encode_error, frame, result_line, result_record
from batchery.tasks.enqueue import new_job_id
from batchery.tiers import of_job as job_tier

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
MAX_IDEMPOTENCY_KEY_CHARS = 255
REPLAY_WAIT_S = 2.0
MAX_OFFSET = 10**9  # past a job's last item a page is empty, as past the end of any list
#: The ids this service issues: ``uuid4().hex`` (``batchery.tasks.enqueue.new_job_id``).
JOB_ID = re.compile(r"[0-9a-f]{32}")


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json", headers=headers)


@bp.before_request
def refuse_ids_never_issued() -> None:
    """Every ``/v1/jobs/<id>`` route: an id of any other form is no job, and must not reach Redis, where
    ``<id>:done`` or ``<id>:out:0`` would address another key of a real job. Runs after the API key check."""
    job_id = (request.view_args or {}).get("job_id")
    if job_id is not None and JOB_ID.fullmatch(job_id) is None:
        raise JobNotFound("no such job: a job id is 32 lowercase hexadecimal characters, as POST /v1/jobs answers")


@bp.post("")
def create_job() -> Response:
    """A repeated ``Idempotency-Key`` (of the same API key) answers with the first job it created, queues
    nothing and counts nothing against the key's quotas."""
    svc = services()
    job = read_job_request(request, svc.registry, svc.settings, tenancy.default_tier(tiers.STANDARD))
    tenancy.check_tier(job.tier)
    job_id = new_job_id()
    spec = svc.router.route(job.model, job.routing_key or job_id)
    svc.require_worker(spec)
    bind(job_id)
    client_key = idempotency_key()
    owner = tenancy.owner()
    scope = owner or ""
    if client_key is not None:
        holder = svc.idempotency.hold(client_key, job_id, scope)
        if holder != job_id:
            bind(holder)
            return _replay(holder)
    try:
        with tenancy.admitted(svc, job_id, len(job.inputs)):
            svc.enqueuer.submit(
                spec, job.inputs, job_id=job_id, metadata=job.metadata, timeout_s=job.timeout_s, cache=job.cache,
                tier=job.tier, owner=owner, webhook=job.webhook, results=job.results,
            )
    except BaseException:
        if client_key is not None:
            svc.idempotency.let_go(client_key, job_id, scope)
        raise
    if client_key is not None:
        svc.idempotency.bind(client_key, job_id, scope)
    record_submission(spec.key, len(job.inputs))
    return _accepted(job_id, "queued", spec.ref, len(job.inputs), job.tier)


@bp.get("")
def list_jobs() -> Response:
    """The jobs this request may see, newest first (:mod:`batchery.app.job_list`)."""
    wanted = job_list.read_filter(request)
    limit = int_arg("limit", job_list.LIMIT_DEFAULT, 1, job_list.LIMIT_MAX)
    jobs, cursor = job_list.find(services(), wanted, limit, job_list.read_cursor(request.args.get("cursor")))
    next_url = None
    if cursor is not None:
        query = {k: v for k, v in request.args.items() if k in ("status", "model")}
        next_url = external_url("jobs.list_jobs", limit=limit, cursor=cursor, **query)
    return json_response({"jobs": [job_document(job) for job in jobs], "next": next_url})


def _accepted(job_id: str, status: str, model_ref: str, total: int, tier: str, **headers: str) -> Response:
    """The 202 answer to a submission, first or replayed."""
    links = job_links(job_id)
    body = {"id": job_id, "status": status, "model": model_ref, "total": total, "tier": tier, "links": links}
    return json_response(body, 202, {"Location": links["self"], **headers})


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return key


def _replay(job_id: str) -> Response:
    """The first job's submission answer, once the first request has recorded it."""
    deadline = time.monotonic() + REPLAY_WAIT_S
    while (job := services().store.get(job_id)) is None:
        if time.monotonic() > deadline:
            raise Unavailable("the first request with this Idempotency-Key is still being accepted; retry shortly")
        time.sleep(0.01)
    model_ref = f"{job['model']}@{job['version']}"
    return _accepted(job_id, job["status"], model_ref, job["total"], job_tier(job), **{"Idempotent-Replayed": "true"})


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return json_response(job_document(_job(job_id)))


@bp.delete("/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Cancels only a job this request may see; its items leave its owner's in-flight count at once."""
    svc = services()
    owner = _job(job_id).get("owner")
    if svc.enqueuer.cancel(job_id) is None:
        raise JobNotFound(f"no job {job_id!r}")
    tenancy.count_out(svc, job_id, owner)
    return json_response(job_document(_job(job_id)))


@bp.get("/<job_id>/results")
def get_results(job_id: str) -> Response:
    job = _job(job_id)
    released = job.get("outputs_released_at")
    if released is not None and time.time() >= released:
        files = [f["url"] for f in job_document(job).get("result_files", {}).get("files", [])]
        where = ", ".join(files) if files else "its batch's output and error files (GET /v1/batches/<id>)"
        raise ResultsInFiles(f"job {job_id}'s results were written to files and have left Redis: {where}")
    svc = services()
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    wait_s = float_arg("wait", 0.0, 0.0, svc.settings.results_wait_max_s)
    accept = request.headers.get("Accept", "")
    for mimetype, render in STREAMS.items():
        if mimetype in accept:
            body = follow.stream(svc.store, job_id, job["total"], offset, wait_s, render, svc.waiters)
            return Response(stream_with_context(body), mimetype=mimetype)
    limit = int_arg("limit", svc.settings.results_page_limit, 1, svc.settings.results_page_max)
    stop = min(offset + limit, job["total"])
    results = [result_record(i, raw) for i, raw in follow.page(svc.store, job_id, offset, stop, wait_s, svc.waiters)]
    next_url = external_url("jobs.get_results", job_id=job_id, offset=stop, limit=limit) if stop < job["total"] else None
    return json_response({"results": results, "next": next_url})


#: Every finished item in one streamed body: binary frames (no JSON at all), or one JSON line each.
STREAMS: dict[str, follow.Render] = {FRAMES: frame, NDJSON: result_line}


def _job(job_id: str) -> dict:
    """The job, if this request may see it, with items still pending past its deadline ended as
    ``deadline_exceeded`` first.

    Workers end such items too, but a job whose items sit in a queue no worker reads needs this to finish.
    """
    store = services().store
    job = store.get(job_id)
    if job is None or not tenancy.sees(job):
        raise JobNotFound(f"no job {job_id!r} (it never existed, or it expired)")
    overdue = job["deadline"] is not None and time.time() > job["deadline"]
    if overdue and job["succeeded"] + job["failed"] < job["total"]:
        store.fail_missing(job_id, job["total"], encode_error(DeadlineExceeded()))
        job = store.get(job_id)
    return job


def float_arg(name: str, default: float, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a number of seconds, not {raw!r}")
    if not low <= value <= high:  # NaN fails this too
        raise BadRequest(f"'{name}' must be between {low:g} and {high:g} seconds, not {raw}")
    return value


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer, not {raw!r}")
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}, not {value}")
    return value
