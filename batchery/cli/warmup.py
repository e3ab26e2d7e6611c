"""Knowing when the processes `batchery up` started are warm: every worker announced, the API listening.

A worker announces itself (its heartbeat) only once its models are loaded and warm and it consumes, so a
worker process is warm when a heartbeat carries its pid. `batchery up` prints its banner only then, so that
the first job after it finds a worker; and a worker that is not warm yet holds no chunk, so Ctrl-C during the
warm-up need not wait for it to drain.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Collection

import redis

from batchery.cli.supervisor import Supervisor
from batchery.store.heartbeats import read_workers

log = logging.getLogger(__name__)
POLL_S = 0.25


def warm_children(client: redis.Redis, supervisor: Supervisor, names: Collection[str]) -> dict[str, dict]:
    """The running children among ``names`` whose heartbeat is in Redis: name -> heartbeat."""
    beats = {beat.get("pid"): beat for beat in read_workers(client)}
    warm = {}
    for name in names:
        child = supervisor.children.get(name)
        if child is not None and child.running and child.process is not None and child.process.pid in beats:
            warm[name] = beats[child.process.pid]
    return warm


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class WarmWatch:
    """A thread that calls ``on_warm`` with the workers' heartbeats once every worker in ``names`` is warm
    and ``host:port`` answers; :meth:`cold` names those not warm yet."""

    def __init__(
        self, client: redis.Redis, supervisor: Supervisor, names: Collection[str], api: tuple[str, int],
        on_warm: Callable[[dict[str, dict]], None],
    ) -> None:
        self.client = client
        self.supervisor = supervisor
        self.names = list(names)
        self.api = api
        self.on_warm = on_warm
        self.warm: dict[str, dict] = {}
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="warm-watch", daemon=True)

    def start(self) -> "WarmWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def cold(self) -> list[str]:
        """Workers that are not warm yet: none once the watch is done, or when Redis cannot say (a worker that
        may hold chunks keeps its drain)."""
        if self.done.is_set():
            return []
        try:
            self.warm = warm_children(self.client, self.supervisor, self.names)
        except redis.RedisError:
            return []
        return [name for name in self.names if name not in self.warm]

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.warm = warm_children(self.client, self.supervisor, self.names)
            except redis.RedisError as exc:
                log.debug("warm-up watch: %s", exc)
                continue
            if len(self.warm) == len(self.names) and listening(*self.api):
                self.done.set()
                self.on_warm(self.warm)
                return
