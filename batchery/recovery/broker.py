"""What the janitor asks of the broker: which chunk messages kombu's Redis transport holds unacknowledged,
how old the oldest waiting message of a queue is, and putting an unacknowledged message back at once.

These read kombu's own structures (see ``kombu/transport/redis.py``): unacknowledged messages live in the
``unacked`` hash (delivery tag -> [message, exchange, routing key]) and the ``unacked_index`` sorted set (tag ->
when it was delivered); a queue is one list per priority step, pushed on the left and popped from the right.
Putting a message back goes through kombu's ``QoS.restore_by_tag``, the same call its visibility timeout uses.
On RabbitMQ none of this is needed: the broker itself requeues what a dead consumer held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from celery import Celery


@dataclass(frozen=True)
class Unacked:
    """A message delivered to some worker and not acknowledged yet."""

    tag: str
    delivered_at: float


def is_redis_broker(celery: Celery) -> bool:
    return celery.conf.broker_url.split("://", 1)[0] in ("redis", "rediss", "sentinel")


class BrokerView:
    """One broker connection for the length of a sweep (``with BrokerView(celery) as broker:``): opening one per
    question cost more than the questions."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        self._conn: Any = None
        self.channel: Any = None

    def __enter__(self) -> "BrokerView":
        self._conn = self.celery.connection_for_write()
        self.channel = self._conn.default_channel
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.release()

    def unacked_by_task(self) -> dict[str, Unacked]:
        """Task id -> its unacknowledged message. The hash holds only what workers have in hand (a few each)."""
        client = self.channel.client
        raw = client.hgetall(self.channel.unacked_key)
        delivered = dict(client.zrange(self.channel.unacked_index_key, 0, -1, withscores=True))
        found = {}
        for tag, value in raw.items():
            message = orjson.loads(value)[0]
            task = message.get("headers", {}).get("id")
            if task:
                found[task] = Unacked(tag.decode(), float(delivered.get(tag, 0.0)))
        return found

    def restore(self, tag: str) -> None:
        """Put an unacknowledged message back at the head of its queue, now rather than after the timeout."""
        self.channel.qos.restore_by_tag(tag, leftmost=False)

    def oldest_sent(self, queue: str) -> float | None:
        """When the oldest message still waiting in ``queue`` was sent (our ``sent_at`` header); None when the
        queue is empty. Every chunk sent before it has been taken off the queue already."""
        names = [self.channel._q_for_pri(queue, pri) for pri in self.channel.priority_steps]
        pipe = self.channel.client.pipeline(transaction=False)
        for name in dict.fromkeys(names):
            pipe.lindex(name, -1)
        tails = [tail for tail in pipe.execute() if tail is not None]
        times = [_sent_at(orjson.loads(tail)) for tail in tails]
        known = [t for t in times if t is not None]
        if len(known) < len(times):
            return 0.0  # a message we cannot date: assume nothing was lost before it
        return min(known) if known else None


def _sent_at(message: dict[str, Any]) -> float | None:
    sent = message.get("headers", {}).get("sent_at")
    return float(sent) if sent is not None else None
