"""batchery's Redis transport: one Redis client per channel and pool, not one per publish or acknowledgement."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection, Queue

from batchery.settings import Settings
from batchery.tasks import transport


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
