"""Cancelled job ids, heard over Redis pub/sub so that batchers can drop items already waiting in them.

A chunk that starts after a cancellation sees the job's status and never reaches a batcher; this covers the
items handed over before it, which would otherwise run to the end of the batcher's queue.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import redis

from batchery import keys

log = logging.getLogger(__name__)
REMEMBERED = 10_000


class CancellationListener:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._thread = None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._ids

    def start(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{keys.cancellations(): self._heard})
        self._thread = pubsub.run_in_thread(sleep_time=1.0, daemon=True, exception_handler=_log_and_go_on)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def _heard(self, message: dict) -> None:
        self._ids[message["data"].decode()] = None
        while len(self._ids) > REMEMBERED:
            self._ids.popitem(last=False)


#: How long the listener waits before it reconnects after Redis failed it: without a pause it would spin.
RECONNECT_PAUSE_S = 1.0


def _log_and_go_on(exc: BaseException, pubsub: redis.client.PubSub, thread: object) -> None:
    log.warning("cancellation listener: %s; listening again in %.0fs", exc, RECONNECT_PAUSE_S)
    time.sleep(RECONNECT_PAUSE_S)
