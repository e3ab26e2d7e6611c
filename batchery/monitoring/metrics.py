"""Every Prometheus metric batchery counts, named in one place, and the small functions that record them.

The API and the workers import the same families; each process fills only those it records. Under gunicorn
the API's processes share their counts through prometheus-client's multiprocess mode (``batchery api`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before any of them imports this). A worker is one process (the
threads pool) and serves its own registry on its own port (:mod:`batchery.monitoring.exporter`). Gauges whose
value lives elsewhere (queue depth in the broker, live workers in Redis, GPUs in NVML) are read at scrape time
by collectors, so no process ever holds a stale copy of them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Histogram

from batchery.tiers import STANDARD

#: Seconds, from a millisecond batch to an hour-long job.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# Jobs and items: submitted in the API, finished in the workers.
JOBS_SUBMITTED = Counter("batchery_jobs_submitted_total", "Jobs accepted by the API.", ["model"])
ITEMS_SUBMITTED = Counter("batchery_items_submitted_total", "Items accepted by the API.", ["model"])
JOBS_FINISHED = Counter(
    "batchery_jobs_finished_total",
    "Jobs that reached a final status (completed, cancelled or failed), once each.",
    ["model", "status"],
)
ITEMS_PROCESSED = Counter(
    "batchery_items_processed_total",
    "Items stored with their result: outcome is 'succeeded' or the error code.",
    ["model", "outcome"],
)

# Latency.
JOB_LATENCY = Histogram(
    "batchery_job_latency_seconds",
    "End to end: a job's submission to its last item stored.",
    ["model", "status", "tier"],
    buckets=LATENCY_BUCKETS_S,
)
QUEUE_WAIT = Histogram(
    "batchery_queue_wait_seconds",
    "Waiting before a model runs: stage 'broker' is a job's submission to its chunk starting in a worker "
    "(once per chunk); stage 'batcher' is an item's hand-over to the batcher to its batch forming (once per item).",
    ["model", "stage", "tier"],
    buckets=LATENCY_BUCKETS_S,
)
INFERENCE = Histogram(
    "batchery_inference_seconds",
    "One batch on the model, retries and bisection included.",
    ["model"],
    buckets=LATENCY_BUCKETS_S,
)
STORE_WRITE = Histogram(
    "batchery_store_write_seconds",
    "Storing one batch's results in Redis (one round trip).",
    ["model"],
    buckets=LATENCY_BUCKETS_S,
)

# Batches.
BATCH_SIZE = Histogram(
    "batchery_batch_size", "Items in each batch the model ran.", ["model"], buckets=BATCH_SIZE_BUCKETS
)
BATCH_FILL = Histogram(
    "batchery_batch_fill_ratio",
    "Items in each batch over the model's max_batch_size.",
    ["model"],
    buckets=RATIO_BUCKETS,
)
BATCH_PADDING = Histogram(
    "batchery_batch_padding_ratio",
    "Padding tokens over all token positions of each text batch.",
    ["model"],
    buckets=RATIO_BUCKETS,
)
TOKENS = Counter(
    "batchery_tokens_total",
    "Token positions of text batches: kind 'real' or 'padding'; the padded fraction is padding over both.",
    ["model", "kind"],
)

# The result cache (consulted by the API at submission).
CACHE_HITS = Counter(
    "batchery_cache_hits_total",
    "Items answered from the result cache, or by an identical item already running.",
    ["model"],
)
CACHE_MISSES = Counter("batchery_cache_misses_total", "Items looked up in the result cache and not found.", ["model"])

# Failures.
RETRIES = Counter("batchery_retries_total", "Retries of a batch after a transient failure.", ["model"])
CHUNK_RETRIES = Counter(
    "batchery_chunk_retries_total", "Retries of a whole chunk whose outputs the store refused.", ["model"]
)
FAULTS_INJECTED = Counter(
    "batchery_faults_injected_total", "Faults injected on purpose (failure injection).", ["model", "fault"]
)
DEAD_LETTERS = Counter(
    "batchery_dead_letters_total", "Items that exhausted their retries and went to the dead-letter store.", ["model"]
)
CANARY_ROLLBACKS = Counter(
    "batchery_canary_rollbacks_total",
    "Canary versions whose weight was set to 0 for doing worse than their primary: reason is 'errors' or 'latency'.",
    ["model", "version", "reason"],
)


def record_submission(model: str, items: int) -> None:
    JOBS_SUBMITTED.labels(model).inc()
    ITEMS_SUBMITTED.labels(model).inc(items)


def record_cache(model: str, hits: int, misses: int) -> None:
    """Called by the result cache once per submission with what it found."""
    if hits:
        CACHE_HITS.labels(model).inc(hits)
    if misses:
        CACHE_MISSES.labels(model).inc(misses)


def record_items(model: str, outcome: str, count: int) -> None:
    if count:
        ITEMS_PROCESSED.labels(model, outcome).inc(count)


def record_job_finished(model: str, status: str, seconds: float | None, tier: str = STANDARD) -> None:
    JOBS_FINISHED.labels(model, status).inc()
    if seconds is not None:
        JOB_LATENCY.labels(model, status, tier).observe(max(seconds, 0.0))


def observe_many(histogram: Any, amount: float, count: int) -> None:
    """``count`` observations of one value, at the cost of one (a labelled histogram child).

    A chunk's items reach the batcher together, so a batch's queue waits come in a few runs of equal values;
    observing them one by one cost about 1 µs of CPU per item. This does what ``observe`` does, ``count`` times:
    the sum grows by ``amount * count`` and the first bucket whose bound holds ``amount`` by ``count``
    (prometheus-client is pinned for these attributes).
    """
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * count)
    histogram._buckets[bisect_left(histogram._upper_bounds, amount)].inc(count)
