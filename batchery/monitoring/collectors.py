"""Gauges read at scrape time from where their truth lives: the broker, the heartbeats, the batchers.

Keeping no copy in the process means the value is right whichever gunicorn process answers the scrape, and a
worker that died cannot leave a stale gauge behind. A source that does not answer leaves its family out of
the scrape (and logs why) rather than reporting a zero that would look like an empty queue.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, Mapping

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from batchery import keys
from batchery.tiers import TIERS
from batchery.store.heartbeats import live_workers
from batchery.store.pools import read_pools

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

    from batchery.batching import Batcher
    from batchery.models.registry import Registry

log = logging.getLogger(__name__)


def _queue_messages() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "batchery_queue_messages",
        "Chunk messages waiting in each model's broker queue (not yet taken by a worker).",
        labels=["model", "tier", "queue"],
    )


def _live_workers() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "batchery_live_workers",
        "Worker processes with a live heartbeat that consume the model's queue.",
        labels=["model"],
    )


def _backlog_items() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "batchery_backlog_items",
        "Items of each model sent to workers and not done yet, held-back chunks and workers' hands included.",
        labels=["model"],
    )


def _batcher_items() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "batchery_batcher_queue_items", "Items waiting in this worker's batcher for a batch.", labels=["model"]
    )


def _pool_families() -> list:
    return [
        GaugeMetricFamily(
            "batchery_pool_processes",
            "Worker processes of each machine's pool: state 'serving' (started, warming up included) or 'draining' "
            "(being stopped by a scale-down).",
            labels=["pool", "state"],
        ),
        GaugeMetricFamily(
            "batchery_pool_min_processes", "The fewest worker processes the pool scales down to.", labels=["pool"]
        ),
        GaugeMetricFamily(
            "batchery_pool_max_processes", "The most worker processes the pool scales up to.", labels=["pool"]
        ),
        CounterMetricFamily(
            "batchery_pool_scaling_events",
            "Times the pool changed size, by direction 'up' or 'down'.",
            labels=["pool", "direction"],
        ),
    ]


class QueueDepth:
    """Each model queue's message count, asked of the broker with a passive declare (Redis and AMQP alike)."""

    def __init__(self, celery: "Celery", registry: "Registry") -> None:
        self.celery = celery
        self.registry = registry

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [_queue_messages()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = _queue_messages()
        try:
            with self.celery.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1)
                for spec in self.registry:
                    for tier in TIERS:
                        queue = spec.queue_for(tier)
                        family.add_metric([spec.key, tier, queue], _message_count(conn, queue))
        except Exception as exc:
            log.warning("queue depth unavailable: the broker did not answer: %s", exc)
            return []
        return [family]


def _message_count(conn: "Connection", queue: str) -> int:
    """A queue the broker does not know is empty: Redis drops an empty list, AMQP declares it on first use."""
    channel = conn.channel()
    try:
        return channel.queue_declare(queue=queue, passive=True).message_count
    except conn.channel_errors:
        return 0
    finally:
        try:
            channel.close()
        except Exception:
            pass


class LiveWorkers:
    """Live workers per model, from the same heartbeats that ``/readyz`` reads; a model nobody serves is 0."""

    def __init__(self, client: redis.Redis, registry: "Registry") -> None:
        self.client = client
        self.registry = registry

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [_live_workers()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            workers = live_workers(self.client)
        except redis.RedisError as exc:
            log.warning("live workers unavailable: Redis did not answer: %s", exc)
            return []
        family = _live_workers()
        for spec in self.registry:
            family.add_metric([spec.key], sum(set(spec.queues) <= set(w.get("queues", [])) for w in workers))
        return [family]


class Backlogs:
    """Each model's backlog counter (:mod:`batchery.store.backlog`), the one figure that counts all the work
    waiting for workers: the broker's queues hold only what the lanes' budgets released and no thread took yet,
    so they read near zero under any load. It is what an autoscaler should follow, and it is the same in every
    API process, so a query over several of them takes the ``max``, not the ``sum``."""

    def __init__(self, client: redis.Redis, registry: "Registry") -> None:
        self.client = client
        self.registry = registry

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [_backlog_items()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        names = [spec.name for spec in self.registry]
        try:
            values = self.client.mget([keys.backlog(name) for name in names])
        except redis.RedisError as exc:
            log.warning("backlog unavailable: Redis did not answer: %s", exc)
            return []
        family = _backlog_items()
        for name, value in zip(names, values):
            family.add_metric([name], max(0, int(value or 0)))
        return [family]


class PoolSizes:
    """Each pool's size as its supervisor last published it (:mod:`batchery.store.pools`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return _pool_families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            pools = read_pools(self.client)
        except redis.RedisError as exc:
            log.warning("pool sizes unavailable: Redis did not answer: %s", exc)
            return []
        processes, lowest, highest, events = families = _pool_families()
        for pool in pools:
            name = pool["pool"]
            processes.add_metric([name, "serving"], pool["serving"])
            processes.add_metric([name, "draining"], pool["draining"])
            lowest.add_metric([name], pool["min"])
            highest.add_metric([name], pool["max"])
            events.add_metric([name, "up"], pool["ups"])
            events.add_metric([name, "down"], pool["downs"])
        return families


class BatcherQueues:
    """Items handed to this worker's batchers and not yet in a batch."""

    def __init__(self, batchers: Mapping[str, "Batcher"]) -> None:
        self.batchers = batchers

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [_batcher_items()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = _batcher_items()
        for name, batcher in self.batchers.items():
            family.add_metric([name], len(batcher.queue))
        return [family]
