"""Serving metrics: a worker's own port, and scrape-time gauges whose source does not answer."""

from __future__ import annotations

import dataclasses
import logging

import redis
import requests

from batchery.cli.redis_server import free_port
from batchery.models.registry import load_registry
from batchery.monitoring.collectors import LiveWorkers, QueueDepth
from batchery.monitoring.exporter import scrape
from batchery.monitoring.worker_exporter import WorkerExporter
from batchery.tasks.celery_app import create_celery


def test_a_taken_port_leaves_the_worker_without_metrics_but_running(caplog):
    port = free_port()
    first = WorkerExporter({}, "127.0.0.1", port).start()
    try:
        with caplog.at_level(logging.WARNING):
            WorkerExporter({}, "127.0.0.1", port).start().stop()
        assert "worker metrics off" in caplog.text
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).ok
    finally:
        first.stop()


def test_gauges_whose_source_is_down_are_left_out_not_zero(settings, caplog):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = dataclasses.replace(settings, redis_url=nowhere)
    registry = load_registry(down.models_file)
    with caplog.at_level(logging.WARNING):
        body, _ = scrape(
            [QueueDepth(create_celery(down), registry), LiveWorkers(redis.Redis.from_url(nowhere), registry)]
        )
    text = body.decode()
    assert "batchery_queue_messages{" not in text and "batchery_live_workers{" not in text
    assert "batchery_jobs_submitted_total" in text, "the process's own counts are still served"
    assert "queue depth unavailable" in caplog.text and "live workers unavailable" in caplog.text
