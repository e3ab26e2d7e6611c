"""batchery's Redis transport: one Redis client per channel and pool, not one per publish or acknowledgement."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kombu import Connection, Queue

from batchery.settings import Settings
from batchery.tasks import transport
from batchery.tasks.celery_app import BRPOP_TIMEOUT_S, create_celery


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every client the channel builds around its pool (kombu's own method, counted)."""
    clients: list[Any] = []
    build = transport.Channel._create_client

    def counted(self: transport.Channel, asynchronous: bool = False) -> Any:
        client = build(self, asynchronous)
        if not asynchronous:
            clients.append(client)
        return client

    monkeypatch.setattr(transport.Channel, "_create_client", counted)
    return clients


def test_a_channel_publishes_and_acknowledges_through_one_client(settings: Settings, created: list[Any]) -> None:
    queue = Queue("batchery.test.transport")
    with Connection(settings.effective_redis_url, transport=transport.PATH) as conn:
        channel = conn.default_channel
        bound = queue(channel)
        bound.declare()
        producer = conn.Producer(channel, serializer="json")
        for n in range(20):
            producer.publish({"n": n}, routing_key=queue.name, declare=[queue])
        received = []
        for _ in range(20):
            message = bound.get(no_ack=False)
            received.append(message.payload["n"])
            message.ack()
        bound.delete()
    assert sorted(received) == list(range(20))
    assert len(created) == 1, "20 publishes, 20 deliveries and 20 acks share the channel's one client"


def test_a_new_pool_gets_a_new_client(settings: Settings, created: list[Any]) -> None:
    queue = Queue("batchery.test.transport.pool")
    with Connection(settings.effective_redis_url, transport=transport.PATH) as conn:
        channel = conn.default_channel
        producer = conn.Producer(channel, serializer="json")
        producer.publish({"n": 1}, routing_key=queue.name, declare=[queue])
        first = created[-1]
        channel._disconnect_pools()
        producer.publish({"n": 2}, routing_key=queue.name, declare=[queue])
        assert created[-1] is not first
        assert created[-1].connection_pool is channel.pool
        bound = queue(channel)
        assert [bound.get(no_ack=True).payload["n"] for _ in range(2)] == [1, 2]
        bound.delete()


def test_a_consumer_channel_closes_within_its_short_brpop(settings: Settings) -> None:
    """Closing a channel waits for its BRPOP in flight: the app's polling interval bounds that wait, and with
    it how long a worker takes to begin its warm shutdown (kombu's default BRPOP blocks for a second)."""
    app = create_celery(settings)
    queue = Queue("batchery.test.transport.brpop")
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        assert channel.brpop_timeout == BRPOP_TIMEOUT_S < 1
        queue(channel).declare()
        channel.basic_consume(queue.name, False, lambda message: None, "brpop-test")
        conn.transport.cycle._register_BRPOP(channel)  # what the worker's event loop does on each turn
        assert channel._in_poll, "a BRPOP is in flight"
        started = time.monotonic()
        channel.close()
        waited = time.monotonic() - started
    app.close()
    assert waited < 0.9, f"closing waited {waited:.2f} s for the BRPOP"
