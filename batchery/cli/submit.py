"""`batchery submit`: a JSONL file in, one output line per input line out, in order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Iterator

import orjson
import requests
from tqdm import tqdm

NDJSON = "application/x-ndjson"


def read_lines(path: Path, lines_per_job: int) -> Iterator[bytes]:
    """The file's lines in job-sized NDJSON bodies."""
    with path.open("rb") as f:
        lines: list[bytes] = []
        for line in f:
            lines.append(line.rstrip(b"\r\n"))
            if len(lines) == lines_per_job:
                yield b"\n".join(lines)
                lines = []
        if lines:
            yield b"\n".join(lines)


def submit_file(
    url: str, path: Path, model: str, out: IO[bytes], *, lines_per_job: int = 100_000, poll_s: float = 0.5,
    progress: bool = True, api_key: str = "",
) -> dict[str, int]:
    """Submit every job, wait for all, then write their results in input order; returns the counts."""
    session = requests.Session()
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    jobs = [_post(session, url, model, body) for body in read_lines(path, lines_per_job)]
    total = sum(job["total"] for job in jobs)
    with tqdm(total=total, unit="item", disable=not progress) as bar:
        finished = _wait(session, jobs, bar, poll_s)
    counts = {"total": total, "succeeded": 0, "failed": 0}
    offset = 0
    for job in jobs:
        for record in _results(session, job):
            record["index"] += offset
            counts["failed" if "error" in record else "succeeded"] += 1
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        offset += job["total"]
    counts["jobs"] = len(finished)
    return counts


def _post(session: requests.Session, url: str, model: str, body: bytes) -> dict:
    response = session.post(f"{url}/v1/jobs", params={"model": model}, data=body, headers={"content-type": NDJSON})
    _raise_for_error(response)
    return response.json()


def _wait(session: requests.Session, jobs: list[dict], bar: tqdm, poll_s: float) -> list[dict]:
    pending = {job["id"]: job for job in jobs}
    done: dict[str, int] = {}
    while pending:
        for job_id, job in list(pending.items()):
            response = session.get(job["links"]["self"])
            _raise_for_error(response)
            status = response.json()
            counts = status["counts"]
            done[job_id] = counts["succeeded"] + counts["failed"]
            if status["status"] in ("completed", "failed", "cancelled"):
                if status["status"] != "completed":
                    raise RuntimeError(f"job {job_id} ended {status['status']}: {status.get('error')}")
                del pending[job_id]
        bar.n = sum(done.values())
        bar.refresh()
        if pending:
            time.sleep(poll_s)
    return jobs


def _results(session: requests.Session, job: dict) -> Iterator[dict]:
    with session.get(job["links"]["results"], headers={"Accept": NDJSON}, stream=True) as response:
        _raise_for_error(response)
        for line in response.iter_lines():
            if line:
                yield orjson.loads(line)


def _raise_for_error(response: requests.Response) -> None:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError):
            message = response.text[:200]
        raise RuntimeError(f"HTTP {response.status_code} from {response.url}: {message}")
