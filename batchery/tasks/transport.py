"""kombu's Redis transport, so that a worker outlives a Redis restart.

When Redis goes away while a worker holds unacknowledged chunks, Celery's consumer closes its connection and
connects again. Two things then fail in kombu's channel with an ``AttributeError``, which Celery takes as
unrecoverable, and the worker exits:

- closing the channel restores its unacknowledged messages through the connection already torn down. This
  channel does not restore them: the chunks' tasks are still running here, their records say which worker holds
  them (:mod:`batchery.store.chunks`), and the janitor puts back the chunks of a worker that is gone, from
  kombu's unacknowledged hash, whatever the broker's visibility timeout;
- a chunk that finishes after the reconnect is acknowledged on its old, closed channel. Here that is a
  connection error, which Celery logs and goes on from: the message stays unacknowledged until the visibility
  timeout brings it back, and then it is a no-op, since its chunk is done.

It also keeps one Redis client per channel. kombu builds a new ``redis.Redis`` around the channel's pool for
every publish, delivery and acknowledgement, and with redis-py 8 each costs about 60 µs of CPU: more than
batchery spends on all of a chunk's other broker work. A client holds no connection of its own (it borrows
one from the pool per command), so one client serves every thread as well as a new one each time.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import redis
from redis.exceptions import ConnectionError


class Channel(redis.Channel):
    do_restore = False

    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise ConnectionError("this broker channel's connection is closed (Redis went away)")
        return super()._connparams(asynchronous)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client()

    def _shared_client(self) -> Any:
        """The channel's client on its current pool; a new one once the channel has a new pool (a reconnect)."""
        pool = self.pool
        client = self.__dict__.get("_batchery_client")
        if client is None or client.connection_pool is not pool:
            client = self.__dict__["_batchery_client"] = self._create_client()
        return client


class Transport(redis.Transport):
    Channel = Channel


#: What ``broker_transport`` names for a ``redis://`` or ``rediss://`` broker.
PATH = f"{__name__}:Transport"
