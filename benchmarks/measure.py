"""The three ways of getting outputs that the benchmark times, each from the client's side of the wall.

- :func:`pipeline` is batchery as a user meets it through its client: one ``POST /v1/jobs``, then every result
  read as it finishes (``Client.follow``), every one decoded and checked. The result cache is off
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

from batchery.client import Client
from batchery.models.registry import ModelSpec
from batchery.settings import Settings
from benchmarks import plain_celery as plain



@dataclass
class Run:
    """One timed run: ``items`` outputs in ``seconds``, with whatever else explains the figure."""

    items: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")




def pipeline(
    api_url: str, model: str, inputs: Sequence[Any], timeout_s: float = 900.0, cache: bool = False
) -> tuple[Run, list[Any]]:
    """Submit ``inputs`` as one job over HTTP and read every result as it finishes; the outputs in input order.

    The client is batchery's own (:class:`batchery.Client`): ``submit``, then ``follow``, which streams the
    results as binary frames while the job runs (``GET .../results?wait=``) with no status polls. ``cache`` is
    the job's ``"cache"`` field; the job's final counts (``cached`` among them) go in the run's details, read
    once the clock has stopped, so a report shows how many items were computed rather than looked up.

    The clock runs from just before the POST to the last result decoded, so it includes the upload, the
    queueing, the worker and the download.
    """
    client = Client(api_url, api_key="", timeout_s=60.0)
    outputs: list[Any] = [None] * len(inputs)
    count = 0
    started = time.perf_counter()
    job = client.submit(model, inputs, cache=cache)
    submitted = time.perf_counter()
    for result in client.follow(job, timeout_s=timeout_s):
        if not result.ok:
            raise RuntimeError(f"job {job.id}: item {result.index} failed: {result.error}")
        outputs[result.index] = result.output
        count += 1
    finished = time.perf_counter()
    doc = client.get(job)
    if doc["status"] != "completed" or doc["counts"]["failed"] or count != len(inputs):
        raise RuntimeError(f"job {job.id} ended {doc['status']} with counts {doc['counts']}, {count} results read")
    details = {
        "job_id": job.id,
        "submit_s": round(submitted - started, 4),
        "read_s": round(finished - submitted, 4),
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
