"""One job over HTTP, watched from the client's side while it runs, for the chaos benchmark.

:func:`benchmarks.measure.pipeline` times a job but cannot act in the middle of it, and it raises on the
first failed item. Here every poll hands the job's counts to a callback (that is where a worker gets killed
at 10%), the job is submitted with ``"cache": false`` (a rerun of the same inputs must be computed again,
not answered from the result cache), and what came back is counted rather than asserted, so that a failed
or duplicated item shows up in the report instead of ending the run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

import orjson
import requests

NDJSON = "application/x-ndjson"
FINAL = ("completed", "failed", "cancelled")
#: Polling backs off to this share of the time waited so far: a poll costs the API and the client about
#: 3 ms of CPU, and polling a 20-second job every 20 ms took 8% of a 2-core machine away from the worker.
POLL_BACKOFF = 0.02
POLL_MAX_S = 0.5
#: Called with the job's counts after every poll, and the seconds since the submission began.
OnProgress = Callable[[dict[str, int], float], None]


@dataclass
class Outcome:
    """What one job cost and what came back: ``seconds`` runs from the POST to the last result line parsed."""

    items: int
    seconds: float
    status: str
    counts: dict[str, int]
    results: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    @property
    def exactly_once(self) -> bool:
        """Every item succeeded, each index came back once, and each output equals its input."""
        r = self.results
        whole = r["ok"] == r["unique"] == r["lines"] == self.items
        return whole and self.status == "completed" and self.counts["failed"] == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "seconds": round(self.seconds, 4),
            "items_per_s": round(self.items_per_s, 1),
            "status": self.status,
            "counts": self.counts,
            "results": self.results,
            "exactly_once": self.exactly_once,
            **self.details,
        }


def watched_job(
    api_url: str,
    model: str,
    inputs: Sequence[Any],
    on_progress: OnProgress | None = None,
    poll_s: float = 0.02,
    timeout_s: float = 600.0,
    job: dict[str, Any] | None = None,
    tier: str | None = None,
) -> Outcome:
    """Submit ``inputs`` (an echo model's) as one job, poll it to its end, read and check every result.

    ``job`` is a submission already made (see :func:`submit`), to watch instead of submitting one.
    """
    http = requests.Session()
    started = time.perf_counter()
    job = job or submit(http, api_url, model, inputs, tier=tier)
    doc = _wait(http, job, started, on_progress, poll_s, timeout_s)
    completed = time.perf_counter()
    results = _read_results(http, job["links"]["results"], inputs)
    finished = time.perf_counter()
    details = {
        "job_id": job["id"],
        "wait_s": round(completed - started, 4),
        "fetch_s": round(finished - completed, 4),
        "server_s": _server_seconds(doc),
    }
    return Outcome(len(inputs), finished - started, doc["status"], doc["counts"], results, details)


def submit(
    http: requests.Session, api_url: str, model: str, inputs: Sequence[Any], cache: bool = False, tier: str | None = None
) -> dict[str, Any]:
    """The 202 answer to one job of ``inputs``, by default bypassing the result cache, in the job's default
    tier unless ``tier`` is given."""
    body = orjson.dumps({"model": model, "inputs": list(inputs), "cache": cache, **({"tier": tier} if tier else {})})
    return _ok(http.post(f"{api_url}/v1/jobs", data=body, headers={"content-type": "application/json"})).json()


def _wait(
    http: requests.Session,
    job: dict[str, Any],
    started: float,
    on_progress: OnProgress | None,
    poll_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Polls every ``poll_s`` at first, then every 2% of the time waited, as the pipeline benchmark does."""
    while True:
        doc = _ok(http.get(job["links"]["self"])).json()
        waited = time.perf_counter() - started
        if on_progress is not None:
            on_progress(doc["counts"], waited)
        if doc["status"] in FINAL:
            return doc
        if waited > timeout_s:
            raise TimeoutError(f"job {job['id']} did not finish in {timeout_s:.0f}s: {doc}")
        time.sleep(min(POLL_MAX_S, max(poll_s, POLL_BACKOFF * waited)))


def _read_results(http: requests.Session, url: str, inputs: Sequence[Any]) -> dict[str, int]:
    """Counts of the result lines: ``ok`` (an output equal to its input), ``failed``, ``wrong``, ``unique``
    indices, and ``lines`` in all; a duplicated index would make ``lines`` exceed ``unique``."""
    seen: Counter[int] = Counter()
    counts = Counter(ok=0, failed=0, wrong=0)
    with http.get(url, headers={"Accept": NDJSON}, stream=True) as response:
        _ok(response)
        for line in response.iter_lines(chunk_size=1 << 16):
            if not line:
                continue
            record = orjson.loads(line)
            seen[record["index"]] += 1
            if "output" not in record:
                counts["failed"] += 1
            elif record["output"] == inputs[record["index"]]:
                counts["ok"] += 1
            else:
                counts["wrong"] += 1
    return {**counts, "unique": len(seen), "lines": sum(seen.values())}


def _server_seconds(doc: dict[str, Any]) -> float | None:
    """From the job's creation to its last item, by the job's own timestamps: free of polling granularity."""
    if not doc.get("created_at") or not doc.get("finished_at"):
        return None
    created, finished = (datetime.fromisoformat(doc[name]) for name in ("created_at", "finished_at"))
    return round((finished - created).total_seconds(), 4)


def _ok(response: requests.Response) -> requests.Response:
    if response.status_code >= 400:
        raise RuntimeError(f"HTTP {response.status_code} from {response.url}: {response.text[:300]}")
    return response
