"""An ended job's results written to its files, a page at a time, and then dropped from Redis.

Every item appears in the files, in index order, with its output or its error: a cancelled job's items that
never ran are first given their ``cancelled`` error in Redis (a failed job's, ``job_failed``), so that the job's
record and its files agree; an item with no result at all (none should be left) is written as
``result_missing``. The files are written under temporary names and take their own only once whole
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
from batchery.errors import Cancelled, JobFailed, ResultMissing
from batchery.results.formats import JsonlWriter, NpyWriter, ResultsRequest
from batchery.store import JobStore
from batchery.store.codec import encode_error
from batchery.store.files import FileStore, new_file_id

#: Items read from Redis per round trip, and written per write; the lease is renewed after each page.
PAGE = 1000
PURPOSE = "job_results"
MISSING = encode_error(ResultMissing())


class LeaseLost(Exception):
    """Another process took over the job's files; this one stops and commits nothing."""


def folder(job_id: str, token: str) -> str:
    return f"jobs/{job_id}/{token}"


def finalize(job: dict[str, Any], jobs: JobStore, files: FileStore, token: str, keep_s: int) -> bool:
    """Write the job's result files and commit them to its record; False when the lease was lost."""
    wanted = ResultsRequest.from_dict(job["results"])
    _complete(job, jobs)
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


def _complete(job: dict[str, Any], jobs: JobStore) -> None:
    """Give each item still without a result the error its job's end means: nothing is left out."""
    if job["status"] in ("cancelled", "failed") and job["succeeded"] + job["failed"] < job["total"]:
        error = Cancelled() if job["status"] == "cancelled" else JobFailed(job.get("error") or "")
        jobs.fail_missing(job["id"], job["total"], encode_error(error))


def _write(
    job: dict[str, Any], jobs: JobStore, files: FileStore, token: str, wanted: ResultsRequest, names: dict[str, str]
) -> dict[str, int]:
    lease = keys.job_finalizing(job["id"])
    with contextlib.ExitStack() as stack:
        outs = {kind: stack.enter_context(files.blobs.writing(name)) for kind, name in names.items()}
        writers: list[Any] = []
        if "results" in outs:
            writers.append(JsonlWriter(outs["results"]))
        if "outputs" in outs:
            writers.append(NpyWriter(outs["outputs"], outs["errors"], job["total"], wanted.dimensions or 0))
        for number, page in enumerate(jobs.iter_pages(job["id"], job["total"], PAGE)):
            raws = [MISSING if raw is None else raw for raw in page]
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
