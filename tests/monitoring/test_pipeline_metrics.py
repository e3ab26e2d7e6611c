"""Jobs through the real gunicorn API (two processes) and a real worker, then both ``/metrics`` read back.

The worker serves a healthy synthetic model, one whose every batch fails transiently (faults injected), and
the API knows a third that nobody serves, whose queue holds chunks sent straight to the broker. One job is
submitted twice, so the second is answered from the result cache and ends in the API. Every figure
is checked against what the jobs must have produced: one chunk of 20 items with ``max_batch_size = 8``
always runs as batches of 8, 8 and 4.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from batchery.cli.redis_server import free_port
from batchery.models.registry import load_registry
from batchery.settings import Settings
from batchery.tasks.celery_app import create_celery
from tests.conftest import GunicornApi, WorkerProcess
from tests.helpers import send_job, wait_for_job

MODELS = textwrap.dedent(
    """
    [models.echo-metrics]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 50
    description = "synthetic: the metrics tests' healthy model"

    [models.echo-metrics-faulty]
    runtime = "echo"
    input = "json"
    max_batch_size = 8
    max_wait_ms = 1
    description = "synthetic: every batch fails transiently, on purpose"
    [models.echo-metrics-faulty.options]
    faults = {transient_rate = 1.0}

    [models.echo-metrics-unstored]
    runtime = "echo"
    input = "json"
    max_wait_ms = 1
    description = "synthetic: Redis refuses every write of its outputs, on purpose"
    [models.echo-metrics-unstored.options]
    faults = {store_rate = 1.0}

    [models.echo-metrics-idle]
    runtime = "echo"
    input = "json"
    description = "synthetic: no worker serves it, so its queue only grows"
    """
)
JOBS, ITEMS, FAULTY_ITEMS, UNSTORED_ITEMS, IDLE_ITEMS = 2, 20, 10, 5, 300
CHUNK_RETRIES = 2


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("metrics")
    (base / "models.toml").write_text(MODELS)
    mine = dataclasses.replace(
        settings,
        models_file=str(base / "models.toml"),
        port=free_port(),
        api_workers=2,
        api_threads=4,
        retry_attempts=1,
        retry_base_s=0.001,
        chunk_retry_attempts=CHUNK_RETRIES,
        chunk_retry_base_s=0.01,
        chunk_retry_max_s=0.05,
        log_format="json",
    )
    worker_port = free_port()
    worker = WorkerProcess(
        mine,
        ["echo-metrics", "echo-metrics-faulty", "echo-metrics-unstored"],
        "metrics",
        base / "worker.log",
        {"BATCHERY_WORKER_METRICS_PORT": str(worker_port)},
    ).start()
    api = GunicornApi(mine, base / "api.log").start()
    idle_queue = load_registry(mine.models_file).get("echo-metrics-idle").queue_for("standard")
    celery = create_celery(mine)
    try:
        yield {
            "settings": mine,
            "api": api,
            "worker": worker,
            "worker_url": f"http://127.0.0.1:{worker_port}",
            "celery": celery,
            "api_log": base / "api.log",
            "worker_log": base / "worker.log",
        }
    finally:
        api.stop()
        worker.stop()
        with celery.connection_for_write() as conn:
            conn.default_channel.queue_purge(idle_queue)


@pytest.fixture(scope="module")
def ran(stack: dict) -> dict:
    """Two healthy jobs one after the other, the first again (answered from the cache), one whose batches
    fail, one whose writes fail, and three chunks left waiting in the idle queue."""
    api, http = stack["api"], requests.Session()
    jobs = []
    for n in [*range(JOBS), 0]:
        job = http.post(
            f"{api.url}/v1/jobs", json={"model": "echo-metrics", "inputs": list(range(100 * n, 100 * n + ITEMS))}
        )
        assert job.status_code == 202, job.text
        assert wait_for_job(http, job.json()["links"]["self"])["counts"]["succeeded"] == ITEMS
        jobs.append(job.json()["id"])
    faulty = http.post(
        f"{api.url}/v1/jobs", json={"model": "echo-metrics-faulty", "inputs": list(range(FAULTY_ITEMS))}
    ).json()
    assert wait_for_job(http, faulty["links"]["self"])["counts"]["failed"] == FAULTY_ITEMS
    unstored = http.post(
        f"{api.url}/v1/jobs", json={"model": "echo-metrics-unstored", "inputs": list(range(UNSTORED_ITEMS))}
    ).json()
    assert wait_for_job(http, unstored["links"]["self"])["counts"]["failed"] == UNSTORED_ITEMS
    spec = load_registry(stack["settings"].models_file).get("echo-metrics-idle")
    send_job(stack["celery"], stack["settings"].job_store(), spec, "never-run", list(range(IDLE_ITEMS)), stack["settings"].chunk_size)
    wait_for_value(
        stack["worker_url"], "batchery_jobs_finished_total", {"model": "echo-metrics", "status": "completed"}, JOBS
    )
    wait_for_value(
        stack["worker_url"], "batchery_jobs_finished_total", {"model": "echo-metrics-faulty", "status": "completed"}, 1
    )
    wait_for_value(
        stack["worker_url"],
        "batchery_jobs_finished_total",
        {"model": "echo-metrics-unstored", "status": "completed"},
        1,
    )
    return {"jobs": jobs, "faulty": faulty["id"]}


def scrape(url: str) -> dict[str, dict]:
    """Families by name, each ``{"type", "samples": {(sample name, sorted labels): value}}``; a fresh connection each time."""
    response = requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return {
        f.name: {"type": f.type, "samples": {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}}
        for f in text_string_to_metric_families(response.text)
    }


def value(families: dict, sample: str, **labels: str) -> float | None:
    for family in families.values():
        for (name, found), v in family["samples"].items():
            if name == sample and dict(found) == labels:
                return v
    return None


def family_name(sample: str) -> str:
    return sample.removesuffix("_total")


def wait_for_value(url: str, sample: str, labels: dict, expected: float, timeout_s: float = 15) -> None:
    """Job status flips as its last batch is stored; the worker reports the job a moment after."""
    deadline = time.monotonic() + timeout_s
    while value(scrape(url), sample, **labels) != expected:
        assert time.monotonic() < deadline, f"{sample}{labels} never reached {expected}"
        time.sleep(0.1)


@pytest.mark.slow
def test_api_metrics_merge_gunicorns_processes_and_read_broker_and_heartbeats(stack, ran):
    scrapes = [scrape(stack["api"].url) for _ in range(6)]
    for families in scrapes:
        assert value(families, "batchery_jobs_submitted_total", model="echo-metrics") == JOBS + 1
        assert value(families, "batchery_items_submitted_total", model="echo-metrics") == (JOBS + 1) * ITEMS
        assert value(families, "batchery_items_submitted_total", model="echo-metrics-faulty") == FAULTY_ITEMS
    api = scrapes[0]
    assert value(api, "batchery_cache_misses_total", model="echo-metrics") == JOBS * ITEMS
    assert value(api, "batchery_cache_hits_total", model="echo-metrics") == ITEMS, "the repeated job, all hits"
    assert value(api, "batchery_cache_misses_total", model="echo-metrics-faulty") == FAULTY_ITEMS
    completed = {"model": "echo-metrics", "status": "completed"}
    assert value(api, "batchery_jobs_finished_total", **completed) == 1, "the cached job ended in the API"
    assert value(api, "batchery_job_latency_seconds_count", tier="standard", **completed) == 1
    chunks = -(-IDLE_ITEMS // stack["settings"].chunk_size)
    idle = {"model": "echo-metrics-idle", "tier": "standard", "queue": "batchery.echo-metrics-idle.standard"}
    assert value(api, "batchery_queue_messages", **idle) == chunks
    for tier in ("interactive", "standard", "bulk"):
        queue = f"batchery.echo-metrics.{tier}"
        assert value(api, "batchery_queue_messages", model="echo-metrics", tier=tier, queue=queue) == 0
    assert value(api, "batchery_live_workers", model="echo-metrics") == 1
    assert value(api, "batchery_live_workers", model="echo-metrics-faulty") == 1
    assert value(api, "batchery_live_workers", model="echo-metrics-idle") == 0
    assert api["batchery_queue_messages"]["type"] == api["batchery_live_workers"]["type"] == "gauge"


@pytest.mark.slow
def test_worker_metrics_count_what_the_jobs_did(stack, ran):
    worker = scrape(stack["worker_url"])
    model, faulty = {"model": "echo-metrics"}, {"model": "echo-metrics-faulty"}
    batches, items = 3 * JOBS, ITEMS * JOBS  # the repeated job never reached a worker
    assert value(worker, "batchery_batch_size_count", **model) == batches, "one observation per batch run"
    assert value(worker, "batchery_batch_size_sum", **model) == items
    assert value(worker, "batchery_batch_size_bucket", le="4.0", **model) == JOBS
    assert value(worker, "batchery_batch_size_bucket", le="8.0", **model) == batches
    assert value(worker, "batchery_batch_fill_ratio_count", **model) == batches
    assert value(worker, "batchery_batch_fill_ratio_sum", **model) == pytest.approx(JOBS * (1 + 1 + 0.5))
    assert value(worker, "batchery_inference_seconds_count", **model) == batches
    assert value(worker, "batchery_store_write_seconds_count", **model) == batches
    assert 0 < value(worker, "batchery_inference_seconds_sum", **model) < 10

    assert value(worker, "batchery_items_processed_total", outcome="succeeded", **model) == items
    assert value(worker, "batchery_jobs_finished_total", status="completed", **model) == JOBS
    assert value(worker, "batchery_job_latency_seconds_count", status="completed", tier="standard", **model) == JOBS
    assert 0 < value(worker, "batchery_job_latency_seconds_sum", status="completed", tier="standard", **model) < 60
    standard = {"tier": "standard", **model}
    assert value(worker, "batchery_queue_wait_seconds_count", stage="broker", **standard) == JOBS, "once per chunk"
    assert value(worker, "batchery_queue_wait_seconds_count", stage="batcher", **standard) == items, "once per item"
    assert value(worker, "batchery_queue_wait_seconds_sum", stage="batcher", **standard) < items * 1.0
    assert value(worker, "batchery_batcher_queue_items", **model) == 0

    faulty_batches = 2  # 10 items: 8 and 2; each tried twice, and a transient failure fails its batch whole
    assert value(worker, "batchery_retries_total", **faulty) == faulty_batches
    assert value(worker, "batchery_faults_injected_total", fault="transient", **faulty) == 2 * faulty_batches
    assert value(worker, "batchery_dead_letters_total", **faulty) == FAULTY_ITEMS
    assert value(worker, "batchery_items_processed_total", outcome="transient_error", **faulty) == FAULTY_ITEMS
    assert value(worker, "batchery_batch_size_count", **faulty) == faulty_batches
    assert value(worker, "batchery_retries_total", **model) == 0, (
        "every served model has its retry series from the start"
    )
    assert value(worker, "batchery_dead_letters_total", **model) is None

    unstored = {"model": "echo-metrics-unstored"}  # one chunk, run 1 + 2 times, each write refused, then given up
    assert value(worker, "batchery_chunk_retries_total", **unstored) == CHUNK_RETRIES
    assert value(worker, "batchery_faults_injected_total", fault="store", **unstored) == CHUNK_RETRIES + 1
    assert value(worker, "batchery_batch_size_count", **unstored) == CHUNK_RETRIES + 1
    assert value(worker, "batchery_items_processed_total", outcome="store_unavailable", **unstored) == UNSTORED_ITEMS
    assert value(worker, "batchery_dead_letters_total", **unstored) == UNSTORED_ITEMS
    assert value(worker, "batchery_jobs_finished_total", status="completed", **unstored) == 1

    assert worker["batchery_tokens"]["type"] == "counter" and not worker["batchery_tokens"]["samples"], (
        "echo pads nothing"
    )
    assert not [name for name in worker if name.startswith("batchery_gpu_")], (
        "no GPU here: no GPU families, and no error"
    )
    assert value(worker, "process_resident_memory_bytes") > 0


def json_lines(path: Path) -> list[dict]:
    entries = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


@pytest.mark.slow
def test_api_logs_are_json_with_the_job_id_on_each_line_about_a_job(stack, ran):
    text = stack["api_log"].read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), "every API line is JSON, gunicorn's own included"
    entries = [json.loads(line) for line in lines]
    for job_id in ran["jobs"]:
        about = [e for e in entries if e.get("job_id") == job_id]
        assert any(e.get("method") == "POST" and e.get("path") == "/v1/jobs" and e.get("status") == 202 for e in about)
        assert any(e.get("path") == f"/v1/jobs/{job_id}" for e in about)
        assert all(e["job_id"] == job_id for e in entries if job_id in e["message"])
    assert {e["logger"] for e in entries} >= {"gunicorn.error", "batchery.api"}


@pytest.mark.slow
def test_worker_logs_are_json_with_job_and_task_ids_on_each_line_about_a_job(stack, ran):
    entries = json_lines(stack["worker_log"])
    for job_id in [*ran["jobs"][:JOBS], ran["faulty"]]:  # the repeated job never reached the worker
        about = [e for e in entries if job_id in e["message"]]
        assert len(about) >= 2, "Celery logs each chunk's receipt and its end"
        assert all(e.get("job_id") == job_id and e.get("task_id", "").startswith(f"{job_id}.") for e in about), about
