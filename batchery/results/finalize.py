"""An ended job's results written to its files, a page at a time, and then dropped from Redis.

Every item appears in the files, in index order, with its output or its error. A cancelled job's files are
written once every item has its result (workers give the items they meet their ``cancelled`` error), or
:data:`batchery.store.jobs.CANCEL_GRACE_S` after it was cancelled, whichever comes first (:func:`ready`); an item
still without a result is then written as ``cancelled`` (of a job that failed whole, ``job_failed``; of any other,
``result_missing``, which should never be seen). Nothing is written to the job's results in Redis: the items'
counts, and the backlog counted from them, stay the workers' to keep.

The files are written under temporary names and take their own only once whole
(:meth:`batchery.store.files.Blobs.writing`), under a folder of this attempt's own: a writer that stalled past
its lease cannot put its files over those of the writer that took over. The job's record then names them, with
their file records, in one transaction that holds only while the writer still holds the job's finalizing lease
(:class:`batchery.store.leases.Leases`); a writer that dies or loses its lease commits nothing, and the next one
starts over. Only then do the job's outputs leave Redis (:meth:`batchery.store.JobStore.release_outputs`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson

from batchery import keys
from batchery.errors import BatcheryError, Cancelled, JobFailed, ResultMissing
from batchery.results.formats import JsonlWriter, NpyWriter, ResultsRequest
from batchery.store import JobStore
from batchery.store.codec import encode_error
from batchery.store.files import FileStore, new_file_id
from batchery.store.jobs import CANCEL_GRACE_S

#: Items read from Redis per round trip, and written per write; the lease is renewed after each page.
PAGE = 1000
PURPOSE = "job_results"


class LeaseLost(Exception):
    """Another process took over the job's files; this one stops and commits nothing."""


def folder(job_id: str, token: str) -> str:
    return f"jobs/{job_id}/{token}"


def ready(job: dict[str, Any], now: float) -> bool:
    """Whether the ended job's files can be written now: every item has its result, or the job failed whole, or a
    cancelled job's last items had their grace to land."""
    if job["status"] == "failed" or job["succeeded"] + job["failed"] >= job["total"]:
        return True
    return job["status"] == "cancelled" and now - (job.get("cancelled_at") or now) > CANCEL_GRACE_S


def missing_error(job: dict[str, Any]) -> BatcheryError:
    """What an item still without a result is written as."""
    if job["status"] == "cancelled":
        return Cancelled()
    if job["status"] == "failed":
        return JobFailed(job.get("error") or "")
    return ResultMissing()


def finalize(job: dict[str, Any], jobs: JobStore, files: FileStore, token: str, keep_s: int) -> bool:
    """Write the job's result files and commit them to its record; False when the lease was lost."""
    wanted = ResultsRequest.from_dict(job["results"])
    names = {kind: f"{folder(job['id'], token)}/{name}" for kind, name in wanted.files().items()}
    try:
        sizes = _write(job, jobs, files, token, wanted, names)
    except LeaseLost:
        return False
    if not _commit(job, jobs, files, token, wanted, names, sizes):
        for name in names.values():
            files.blobs.delete(name)
        return False
    jobs.release_outputs(job["id"], job["total"], keep_s)
    return True


def _write(
    job: dict[str, Any], jobs: JobStore, files: FileStore, token: str, wanted: ResultsRequest, names: dict[str, str]
) -> dict[str, int]:
    lease = keys.job_finalizing(job["id"])
    missing = encode_error(missing_error(job))
    with contextlib.ExitStack() as stack:
        outs = {kind: stack.enter_context(files.blobs.writing(name)) for kind, name in names.items()}
        writers: list[Any] = []
        if "results" in outs:
            writers.append(JsonlWriter(outs["results"]))
        if "outputs" in outs:
            writers.append(NpyWriter(outs["outputs"], outs["errors"], job["total"], wanted.dimensions or 0))
        for number, page in enumerate(jobs.iter_pages(job["id"], job["total"], PAGE)):
            raws = [missing if raw is None else raw for raw in page]
            for writer in writers:
                writer.page(number * PAGE, raws)
            if not jobs.leases.renew(lease, token, keys.FINALIZE_LEASE_S):
                raise LeaseLost()
        return {kind: out.tell() for kind, out in outs.items()}


def _commit(
    job: dict[str, Any],
    jobs: JobStore,
    files: FileStore,
    token: str,
    wanted: ResultsRequest,
    names: dict[str, str],
    sizes: dict[str, int],
) -> bool:
    now = time.time()
    made = []
    for kind, name in wanted.files().items():
        fmt = "npy" if name.endswith(".npy") else "jsonl"
        made.append({"kind": kind, "format": fmt, "id": new_file_id(), "bytes": sizes[kind], "filename": name})

    def writes(pipe: Any) -> None:
        for found in made:
            filename = f"{job['id']}_{found['filename']}"
            blob, size = names[found["kind"]], found["bytes"]
            files.record(pipe, found["id"], blob, size, filename, PURPOSE, job.get("owner"), now)
        record = {"result_files": orjson.dumps(made), "results_state": "written", "results_written_at": repr(now)}
        pipe.hset(keys.job(job["id"]), mapping=record)
        pipe.expireat(keys.job(job["id"]), int(job["expires_at"]))  # a record that expired meanwhile stays gone

    return jobs.leases.commit(keys.job_finalizing(job["id"]), token, writes)
