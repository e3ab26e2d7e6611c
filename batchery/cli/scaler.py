"""The mechanism that scales a CPU pool: it reads the backlog, asks the policy, and starts or drains processes.

It runs as a watcher on the supervisor's own loop (:attr:`Supervisor.watchers`), once a second, so the children
are never changed from two threads. Growing starts the lowest-numbered free slots (``cpu1``, ``cpu2``...): each
keeps its name, metrics port and share of the cores. Shrinking retires the highest-numbered ones through
:meth:`Supervisor.retire`: SIGTERM, which is Celery's warm shutdown, so a process finishes the batches it holds
and hands back the chunks it had not started (``Reject(requeue=True)``; prefetched messages go back when its
broker connection closes); one that outstays the drain timeout is killed and its chunks put back at once. A
slot still draining is not started again until its process has gone, so two processes never share a name, and
the pool never runs more than its maximum, draining ones included.

Whatever the pool's size, the supervisor publishes it (:mod:`batchery.store.pools`) for the API's metrics.
Redis not answering leaves the pool at its size and is logged once, when it starts and when it ends.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import TYPE_CHECKING, Callable, Sequence

import redis

from batchery import defaults, keys
from batchery.cli.supervisor import Supervisor
from batchery.scaling import ScalePolicy
from batchery.store import pools
from batchery.store.backlog import Backlog

if TYPE_CHECKING:
    from batchery.cli.pool import Slot

log = logging.getLogger(__name__)


class PoolScaler:
    """Sizes ``slots`` (the pool's CPU slots, planned up to the maximum) between the policy's bounds; ``fixed``
    slots (one per GPU) are always running and only counted."""

    def __init__(
        self,
        supervisor: Supervisor,
        policy: ScalePolicy,
        slots: Sequence["Slot"],
        launch: Callable[["Slot"], None],
        client: redis.Redis,
        models: Sequence[str],
        drain_timeout_s: float,
        fixed: Sequence["Slot"] = (),
        name: str | None = None,
        interval_s: float = defaults.SCALE_INTERVAL_S,
    ) -> None:
        self.supervisor = supervisor
        self.policy = policy
        self.slots = sorted(slots, key=lambda slot: slot.number)
        self.launch = launch
        self.client = client
        self.backlog = Backlog(client)
        self.models = sorted(set(models))
        self.drain_timeout_s = drain_timeout_s
        self.fixed = list(fixed)
        self.name = name or socket.gethostname()
        self.interval_s = interval_s
        self.changed_at = -math.inf
        self.low_since: float | None = None
        self.ups = self.downs = 0
        self._next_at = -math.inf
        self._failing = False
        self._held_back = False
        #: The slots :meth:`start` started.
        self.started: list["Slot"] = []

    @property
    def scales(self) -> bool:
        return bool(self.slots) and not self.policy.fixed

    def start(self, size: int) -> list["Slot"]:
        """Start the fixed slots and the first ``size`` CPU slots; returns the slots started."""
        for slot in self.fixed:
            self.launch(slot)
        started = self.slots[:size]
        for slot in started:
            self.launch(slot)
        self.started = [*self.fixed, *started]
        if self.scales:
            log.info(
                "pool %s scales its CPU processes between %d and %d on the backlog of %s, starting at %d",
                self.name,
                self.policy.min_processes,
                self.policy.max_processes,
                ", ".join(self.models),
                len(started),
            )
        return self.started

    def serving(self) -> list["Slot"]:
        """The CPU slots that run, or wait for their restart, and are not being retired."""
        return [
            s for s in self.slots if (c := self.supervisor.children.get(s.name)) is not None and c.retire_by is None
        ]

    def draining(self) -> list["Slot"]:
        return [
            s for s in self.slots if (c := self.supervisor.children.get(s.name)) is not None and c.retire_by is not None
        ]

    def __call__(self, now: float) -> None:
        """The supervisor's watcher: once per interval, decide, apply, publish."""
        if now < self._next_at:
            return
        self._next_at = now + self.interval_s
        try:
            if self.scales:
                self._decide(self.backlog.queued_many(self.models), now)
            self._publish()
        except redis.RedisError as exc:
            if not self._failing:
                log.warning(
                    "pool %s: Redis does not answer (%s); the pool keeps its size until it does", self.name, exc
                )
            self._failing = True
            return
        if self._failing:
            log.info("pool %s: Redis answers again", self.name)
            self._failing = False

    def _decide(self, backlog: dict[str, int], now: float) -> None:
        size = len(self.serving())
        low_for_s = 0.0 if self.low_since is None else now - self.low_since
        decision = self.policy.decide(backlog, size, now - self.changed_at, low_for_s)
        self.low_since = (now if self.low_since is None else self.low_since) if decision.low else None
        if decision.size != size:
            self.resize(decision.size, decision.reason, now)

    def resize(self, size: int, reason: str, now: float) -> None:
        """Start or drain processes until ``size`` serve (as far as free slots allow), and say why in the log."""
        current = len(self.serving())
        if size > current and not self._grow(current, size, reason):
            return
        if size < current:
            self._shrink(current, size, reason)
        if size != current:
            self.changed_at = now
            self.low_since = None

    def _grow(self, size: int, wanted: int, reason: str) -> bool:
        """Start the lowest free slots; False when every one is still draining (said once, until one is free)."""
        free = [s for s in self.slots if s.name not in self.supervisor.children][: wanted - size]
        if not free:
            if not self._held_back:
                draining = ", ".join(s.name for s in self.draining())
                log.info(
                    "pool %s would grow to %d processes, once %s has drained: %s", self.name, wanted, draining, reason
                )
            self._held_back = True
            return False
        self._held_back = False
        self.ups += 1
        busy = f" ({len(self.draining())} slots still draining)" if len(free) < wanted - size else ""
        log.info(
            "pool %s scales up %d -> %d processes%s, starting %s: %s",
            self.name,
            size,
            size + len(free),
            busy,
            ", ".join(s.name for s in free),
            reason,
        )
        for slot in free:
            self.launch(slot)
        return True

    def _shrink(self, size: int, wanted: int, reason: str) -> None:
        leaving = sorted(self.serving(), key=lambda slot: -slot.number)[: size - wanted]
        self.downs += 1
        held = {slot.name: self._chunks_held(slot.name) for slot in leaving}
        log.info(
            "pool %s scales down %d -> %d processes, draining %s: %s",
            self.name,
            size,
            wanted,
            ", ".join(f"{name} (holding {n} chunks)" for name, n in held.items()),
            reason,
        )
        for slot in leaving:
            self.supervisor.retire(slot.name, self.drain_timeout_s)

    def _chunks_held(self, slot_name: str) -> int:
        """What the process finishes or hands back as it drains, for the log."""
        return int(self.client.scard(keys.holding(f"{slot_name}@{socket.gethostname()}")))

    def _publish(self) -> None:
        fixed = len(self.fixed)
        pools.publish(
            self.client,
            self.name,
            {
                "pid": os.getpid(),
                "serving": fixed + len(self.serving()),
                "draining": len(self.draining()),
                "min": fixed + min(self.policy.min_processes, len(self.slots)),
                "max": fixed + min(self.policy.max_processes, len(self.slots)),
                "ups": self.ups,
                "downs": self.downs,
            },
        )

    def close(self) -> None:
        """The pool stopped: its size leaves the metrics now."""
        try:
            pools.withdraw(self.client, self.name)
        except redis.RedisError as exc:
            log.debug("pool %s: could not withdraw its size: %s", self.name, exc)
