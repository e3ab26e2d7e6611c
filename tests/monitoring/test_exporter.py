"""Serving metrics: a worker's own port, and scrape-time gauges whose source does not answer."""

from __future__ import annotations

import dataclasses
import logging
import time

import redis
import requests

from batchery.cli.redis_server import free_port
from batchery.models.registry import load_registry
from batchery.monitoring.collectors import Backlogs, LiveWorkers, PoolSizes, QueueDepth
from batchery.monitoring.exporter import scrape
from batchery.monitoring.worker_exporter import WorkerExporter
from batchery.store import pools
from batchery.store.backlog import Backlog
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
            [
                QueueDepth(create_celery(down), registry),
                Backlogs(redis.Redis.from_url(nowhere), registry),
                LiveWorkers(redis.Redis.from_url(nowhere), registry),
                PoolSizes(redis.Redis.from_url(nowhere)),
            ]
        )
    text = body.decode()
    assert "batchery_queue_messages{" not in text and "batchery_live_workers{" not in text
    assert "batchery_backlog_items{" not in text and "backlog unavailable" in caplog.text
    assert "batchery_pool_processes{" not in text and "pool sizes unavailable" in caplog.text
    assert "batchery_jobs_submitted_total" in text, "the process's own counts are still served"
    assert "queue depth unavailable" in caplog.text and "live workers unavailable" in caplog.text


def backlog_of(text: str, model: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(f'batchery_backlog_items{{model="{model}"}}')]
    return float(line.rsplit(" ", 1)[1])


def test_the_backlog_gauge_reads_the_counter_the_api_bounds_submissions_by(settings, redis_client):
    """The figure an autoscaler follows: every model is reported (0 when nothing was ever counted in), and a
    model's value is its counter, however the items are split between the broker, the lanes and the workers."""
    registry = load_registry(settings.models_file)
    backlog = Backlog(redis_client)
    collector = [Backlogs(redis_client, registry)]
    assert backlog_of(scrape(collector)[0].decode(), "echo-oom") == 0.0
    backlog.reserve("echo-orphan", 1234, bound=0)
    try:
        text = scrape(collector)[0].decode()
        assert backlog_of(text, "echo-orphan") == backlog.queued("echo-orphan") >= 1234
        assert {spec.name for spec in registry} <= {
            line.split('"')[1] for line in text.splitlines() if line.startswith("batchery_backlog_items{")
        }
    finally:
        backlog.release("echo-orphan", 1234)


def test_each_pool_s_published_size_is_a_gauge_until_it_is_withdrawn_or_expires(redis_client):
    record = {"serving": 3, "draining": 1, "min": 1, "max": 4, "ups": 2, "downs": 1}
    pools.publish(redis_client, "test-pool-a", record)
    pools.publish(redis_client, "test-pool-b", {**record, "serving": 1, "draining": 0}, ttl_s=0.2)
    text = scrape([PoolSizes(redis_client)])[0].decode()
    for line in (
        'batchery_pool_processes{pool="test-pool-a",state="serving"} 3.0',
        'batchery_pool_processes{pool="test-pool-a",state="draining"} 1.0',
        'batchery_pool_min_processes{pool="test-pool-a"} 1.0',
        'batchery_pool_max_processes{pool="test-pool-a"} 4.0',
        'batchery_pool_scaling_events_total{direction="up",pool="test-pool-a"} 2.0',
        'batchery_pool_scaling_events_total{direction="down",pool="test-pool-a"} 1.0',
        'batchery_pool_processes{pool="test-pool-b",state="serving"} 1.0',
    ):
        assert line in text, line
    pools.withdraw(redis_client, "test-pool-a")
    time.sleep(0.3)
    text = scrape([PoolSizes(redis_client)])[0].decode()
    assert 'pool="test-pool-a"' not in text, "withdrawn"
    assert 'pool="test-pool-b"' not in text, "expired: its supervisor stopped refreshing it"
    assert b"test-pool-b" not in redis_client.smembers("batchery:pools"), "pruned from the set"
