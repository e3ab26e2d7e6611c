"""A finished batch's job turned into its output and error files.

One pass over the plan (line order) and the job's results (index order, read a page at a time): each request
whose every input has a vector goes to the output file as a 200 with OpenAI's embeddings body; the others go to
the error file: a request with a failed input answers that input's error, a request the batch never ran
(cancelled, or past its completion window) is ``batch_cancelled`` or ``batch_expired``, and a line that could
not be read answers its error. Every line of the input file is thus answered exactly once, in one of the files.

Both files are written under temporary names and only moved into place once whole, in a folder of the attempt's
own (a writer that stalled past its lease cannot put its files over those of the one that took over); the
batch's record then names them, in one transaction that holds only while the writer still holds the batch's
finalizing lease (:meth:`batchery.store.batches.BatchStore.commit`). A writer that dies half-way commits
nothing: its lease lapses and the next poll of the batch writes the files again, from the start. The job's
results are read as a job's result files read them (:meth:`batchery.store.JobStore.iter_pages`) and, once the
files are the batch's, leave Redis as a job's do (:meth:`batchery.store.JobStore.release_outputs`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

from batchery.errors import BatcheryError
from batchery.openai_compat.plan import Line, read_plan
from batchery.openai_compat.shapes import embedding_list, error_body, item_failure, vector
from batchery.store import JobStore
from batchery.store.batches import BatchStore
from batchery.store.codec import decode, dumps
from batchery.store.files import FileStore, new_file_id

#: Lines written between renewals of the finalizing lease.
RENEW_EVERY = 1000
#: Item errors that mean the batch stopped, not that the input failed.
STOPPED = {"cancelled": "batch_cancelled", "deadline_exceeded": "batch_expired"}


class LeaseLost(Exception):
    """Another process took over the batch's files; this one stops and commits nothing."""


@dataclass
class Tally:
    completed: int = 0
    failed: int = 0
    expired: int = 0


def blob_names(batch_id: str, token: str = "") -> dict[str, str]:
    """Where the batch's plan is, and where the attempt holding lease ``token`` writes its files."""
    return {
        "plan": f"batches/{batch_id}/plan.jsonl",
        "output": f"batches/{batch_id}/{token}/output.jsonl",
        "error": f"batches/{batch_id}/{token}/errors.jsonl",
    }


def finalize(
    batch: dict[str, Any], jobs: JobStore, files: FileStore, batches: BatchStore, token: str, keep_s: int
) -> bool:
    """Write the batch's files and commit them with its final status, then let the job's outputs go from Redis
    in ``keep_s``; False when the lease was lost."""
    names = blob_names(batch["id"], token)
    tally = Tally()
    sizes = {}
    try:
        with files.blobs.writing(names["output"]) as out, files.blobs.writing(names["error"]) as err:
            with files.blobs.open(names["plan"]) as plan:
                results = _results(jobs, batch["job_id"], batch["items"] or 0)
                for number, line in enumerate(read_plan(plan), start=1):
                    ok, record = _answer(batch, line, results, tally)
                    (out if ok else err).write(dumps(record) + b"\n")
                    if number % RENEW_EVERY == 0 and not batches.renew_lease(batch["id"], token):
                        raise LeaseLost()
            sizes = {"output": out.tell(), "error": err.tell()}
    except LeaseLost:
        return False
    if not _commit(batch, files, batches, token, tally, sizes, names):
        files.blobs.delete(names["output"])
        files.blobs.delete(names["error"])
        return False
    jobs.release_outputs(batch["job_id"], batch["items"] or 0, keep_s)
    return True


def _commit(
    batch: dict[str, Any],
    files: FileStore,
    batches: BatchStore,
    token: str,
    tally: Tally,
    sizes: dict[str, int],
    names: dict[str, str],
) -> bool:
    now = time.time()
    ids = {kind: new_file_id() for kind, size in sizes.items() if size}
    status = "cancelled" if batch.get("cancelling_at") else "expired" if tally.expired else "completed"
    fields = {
        "status": status,
        f"{status}_at": int(now),
        "completed": tally.completed,
        "failed": tally.failed,
        "output_file_id": ids.get("output"),
        "error_file_id": ids.get("error"),
    }

    def records(pipe: Any) -> None:
        for kind, file_id in ids.items():
            filename = f"{batch['id']}_{kind}.jsonl"
            files.record(pipe, file_id, names[kind], sizes[kind], filename, "batch_output", batch.get("owner"), now)

    committed = batches.commit(batch["id"], token, fields, records)
    if committed:
        files.blobs.delete(names["plan"])
        for kind, size in sizes.items():
            if not size:
                files.blobs.delete(names[kind])
    return committed


def _results(jobs: JobStore, job_id: str, total: int) -> Iterator[bytes | None]:
    """Each item's stored result in index order, None where it has none."""
    for page in jobs.iter_pages(job_id, total):
        yield from page


def _answer(
    batch: dict[str, Any], line: Line, results: Iterator[bytes | None], tally: Tally
) -> tuple[bool, dict[str, Any]]:
    """The line's output line, and whether it goes to the output file."""
    if line.error is not None:
        tally.failed += 1
        return False, _line(batch, line, None, {"code": line.error["code"], "message": line.error["message"]})
    vectors, failure, stopped = [], None, None
    for index in range(line.count):
        raw = next(results)
        kind, value = decode(raw) if raw is not None else ("error", {"code": "cancelled", "message": ""})
        found = vector(kind, value)
        if found is not None:
            vectors.append(found)
        elif kind == "error" and value.get("code") in STOPPED:
            stopped = stopped or STOPPED[value["code"]]
        elif failure is None:
            failure = item_failure(index, kind, value)
    if failure is None and stopped is None:
        tally.completed += 1
        body = embedding_list(vectors, line.encoding_format, batch["model"], line.tokens)
        return True, _line(
            batch, line, {"status_code": 200, "request_id": _request_id(batch, line), "body": body}, None
        )
    tally.failed += 1
    if failure is not None:
        return False, _line(batch, line, _failed(batch, line, failure), None)
    tally.expired += stopped == "batch_expired"
    why = "the batch was cancelled" if stopped == "batch_cancelled" else "the batch's completion window passed"
    return False, _line(batch, line, None, {"code": stopped, "message": f"{why} before this request ran"})


def _failed(batch: dict[str, Any], line: Line, failure: BatcheryError) -> dict[str, Any]:
    body = error_body(failure.status, failure.code, failure.message, failure.param)
    return {"status_code": failure.status, "request_id": _request_id(batch, line), "body": body}


def _line(
    batch: dict[str, Any], line: Line, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> dict[str, Any]:
    digest = hashlib.sha256(f"{batch['id']}:{line.line}".encode()).hexdigest()[:24]
    return {"id": f"batch_req_{digest}", "custom_id": line.custom_id, "response": response, "error": error}


def _request_id(batch: dict[str, Any], line: Line) -> str:
    return f"{batch['job_id']}:{line.line}"
