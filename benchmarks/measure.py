"""The three ways of getting outputs that the benchmark times, each from the client's side of the wall.

- :func:`pipeline` is batchery as a user meets it: one ``POST /v1/jobs``, polling ``GET /v1/jobs/<id>`` until
  the job completes, then the NDJSON results stream, every line parsed and checked. The result cache is off
  unless asked for: a benchmark repeats the same inputs, and a repeat answered from the cache times Redis
  lookups instead of the pipeline.
- :func:`plain_celery` is plain Celery with ``apply_async`` and ``AsyncResult.get()``: one task per item, or
  one task per list of items.
- :class:`RawOnnx` is the floor of what a worker can do: the same ONNX Runtime session, prepare + run over
  the same texts in the model's batch size, in one thread of one process, with nothing else in the way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

import numpy as np
import orjson
import requests

from batchery.models.registry import ModelSpec
from batchery.settings import Settings
from benchmarks import plain_celery as plain

NDJSON = "application/x-ndjson"
FINAL = ("completed", "failed", "cancelled")


@dataclass
class Run:
    """One timed run: ``items`` outputs in ``seconds``, with whatever else explains the figure."""

    items: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")


#: Polling backs off to this share of the time waited so far: a poll costs the API and the client about
#: 3 ms of CPU, and polling a 20-second job every 20 ms took 8% of a 2-core machine away from the worker.
POLL_BACKOFF = 0.02
POLL_MAX_S = 0.5


def pipeline(
    api_url: str,
    model: str,
    inputs: Sequence[Any],
    poll_s: float = 0.02,
    timeout_s: float = 900.0,
    cache: bool = False,
) -> tuple[Run, list[Any]]:
    """Submit ``inputs`` as one job over HTTP, wait for it, read every result; the outputs in input order.

    ``cache`` is the job's ``"cache"`` field; the job's final counts (``cached`` among them) go in the run's
    details, so a report shows how many items were computed rather than looked up.

    The clock runs from just before the POST to the last result line parsed, so it includes the upload, the
    queueing, the worker, the polling granularity and the download. Polls come every ``poll_s`` at first,
    then every 2% of the time waited (at most 0.5 s), so seeing the job done late costs about 1% at most.
    """
    http = requests.Session()
    body = orjson.dumps({"model": model, "inputs": list(inputs), "cache": cache})
    started = time.perf_counter()
    response = http.post(f"{api_url}/v1/jobs", data=body, headers={"content-type": "application/json"})
    _check(response)
    job = response.json()
    submitted = time.perf_counter()
    deadline = submitted + timeout_s
    polls = 0
    while True:
        response = http.get(job["links"]["self"])
        _check(response)
        doc = response.json()
        polls += 1
        if doc["status"] in FINAL:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"job {job['id']} did not finish in {timeout_s:.0f}s: {doc}")
        time.sleep(min(POLL_MAX_S, max(poll_s, POLL_BACKOFF * (time.perf_counter() - submitted))))
    if doc["status"] != "completed" or doc["counts"]["failed"]:
        raise RuntimeError(f"job {job['id']} ended {doc['status']} with counts {doc['counts']}: {doc.get('error')}")
    completed = time.perf_counter()
    outputs: list[Any] = [None] * len(inputs)
    count = 0
    with http.get(job["links"]["results"], headers={"Accept": NDJSON}, stream=True) as response:
        _check(response)
        for line in response.iter_lines(chunk_size=1 << 16):  # requests reads 512 bytes at a time otherwise
            if not line:
                continue
            record = orjson.loads(line)
            if "output" not in record:
                raise RuntimeError(f"job {job['id']}: item {record.get('index')} failed: {record.get('error')}")
            outputs[record["index"]] = record["output"]
            count += 1
    finished = time.perf_counter()
    if count != len(inputs):
        raise RuntimeError(f"job {job['id']}: {count} results for {len(inputs)} inputs")
    details = {
        "job_id": job["id"],
        "submit_s": round(submitted - started, 4),
        "wait_s": round(completed - submitted, 4),
        "fetch_s": round(finished - completed, 4),
        "polls": polls,
        "counts": doc["counts"],
        **_server_times(doc),
    }
    return Run(count, finished - started, details), outputs


def _server_times(doc: dict[str, Any]) -> dict[str, float]:
    """How long the job sat queued and how long workers took, by the job's own timestamps."""
    stamps = {
        name: datetime.fromisoformat(doc[name]) for name in ("created_at", "started_at", "finished_at") if doc.get(name)
    }
    times = {}
    if "created_at" in stamps and "started_at" in stamps:
        times["server_queued_s"] = round((stamps["started_at"] - stamps["created_at"]).total_seconds(), 4)
    if "started_at" in stamps and "finished_at" in stamps:
        times["server_running_s"] = round((stamps["finished_at"] - stamps["started_at"]).total_seconds(), 4)
    return times


def _check(response: requests.Response) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"HTTP {response.status_code} from {response.url}: {response.text[:300]}")


def plain_celery(redis_url: str, inputs: Sequence[Any], task_items: int = 1) -> tuple[Run, list[Any]]:
    """The inputs against the plain Celery worker, ``task_items`` to a task; a fresh app per run, as a fresh
    client would have."""
    app = plain.create_app(redis_url)
    try:
        app.tasks[plain.ECHO_TASK].apply_async(("warm up",)).get(timeout=60)  # connect broker and backend first
        seconds, outputs = plain.run_client(app, inputs, task_items)
    finally:
        app.close()
    details = {"task_items": task_items, "tasks": -(-len(inputs) // task_items)}
    return Run(len(outputs), seconds, details), outputs


class RawOnnx:
    """The minilm model loaded straight into this process, for the floor the pipeline is compared with."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        from batchery.runtimes.onnx import OnnxRuntime

        self.spec = spec
        self.runtime = OnnxRuntime.load(spec, "cpu", settings)
        self.runtime.warm_up()  # as a worker does before it serves
        self.threads = int(self.runtime.session.get_session_options().intra_op_num_threads)

    def run(self, texts: Sequence[str]) -> tuple[Run, np.ndarray]:
        """prepare + run over ``texts`` in order, ``max_batch_size`` at a time; one vector per text."""
        size = self.spec.max_batch_size
        outputs: list[np.ndarray] = []
        started = time.perf_counter()
        for start in range(0, len(texts), size):
            outputs.extend(self.runtime.run(self.runtime.prepare(texts[start : start + size])))
        seconds = time.perf_counter() - started
        details = {"batch_size": size, "batches": -(-len(texts) // size), "intra_op_threads": self.threads}
        return Run(len(outputs), seconds, details), np.stack(outputs)

    def close(self) -> None:
        self.runtime.close()
