"""`BATCHERY_BROKER_URL=amqp://...` works: a job through a private RabbitMQ node, job state still in Redis."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import requests

from batchery.models.registry import load_registry
from batchery.monitoring.collectors import QueueDepth
from batchery.tasks.celery_app import create_celery
from tests.conftest import ApiServer, WorkerProcess
from tests.helpers import send_job, wait_for_job

@pytest.mark.slow
def test_a_job_runs_over_an_amqp_broker(amqp_url, settings, session_dir):
    amqp = dataclasses.replace(settings, broker_url=amqp_url)
    worker = WorkerProcess(amqp, ["echo"], "amqp", session_dir / "amqp-worker.log").start()
    try:
        with ApiServer(amqp) as api:
            http = requests.Session()
            job = http.post(f"{api.url}/v1/jobs", json={"model": "echo", "inputs": list(range(500)), "cache": False}).json()
            status = wait_for_job(http, job["links"]["self"], timeout_s=60)
            assert status["counts"] == {"succeeded": 500, "failed": 0, "pending": 0, "cached": 0}
            results = http.get(job["links"]["results"], params={"limit": 500}).json()["results"]
            assert [r["output"] for r in results] == list(range(500))
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_queue_depth_is_read_from_an_amqp_broker_and_an_undeclared_queue_is_empty(amqp_url, settings, tmp_path, store):
    models = tmp_path / "models.toml"
    models.write_text('[models.echo-amqp-idle]\nruntime = "echo"\ninput = "json"\n\n[models.echo-amqp-never]\nruntime = "echo"\ninput = "json"\n')
    amqp = dataclasses.replace(settings, broker_url=amqp_url, models_file=str(models))
    celery, registry = create_celery(amqp), load_registry(amqp.models_file)
    idle = registry.get("echo-amqp-idle")
    send_job(celery, store, idle, f"never-run-{os.getpid()}", list(range(300)), 128)
    try:
        deadline = time.monotonic() + 10
        while True:
            depth = {
                (s.labels["model"], s.labels["tier"]): s.value for f in QueueDepth(celery, registry).collect() for s in f.samples
            }
            if depth.get(("echo-amqp-idle", "standard")) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert depth[("echo-amqp-idle", "standard")] == 3, "three chunks of 128, 128 and 44 items"
        others = [value for (model, tier), value in depth.items() if (model, tier) != ("echo-amqp-idle", "standard")]
        assert len(others) == 3 * len(registry) - 1 and not any(others)
    finally:
        with celery.connection_for_write() as conn:
            for queue in idle.queues:
                conn.default_channel.queue_delete(queue)
