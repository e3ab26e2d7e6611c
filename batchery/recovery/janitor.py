"""The janitor: every chunk keeps moving, and every handoff gets finished, whatever died on the way.

One runs in every worker process. Each sweep it:

- **drains handoffs** (:mod:`batchery.store.handoff`): shares results with waiters beyond a page, and sends
  items whose shared computation will not land for them to be computed anew, a job's items together in chunks;
- **recovers a dead worker's chunks**: a worker whose heartbeat is gone but whose holding set is not
  (:mod:`batchery.store.chunks`) died holding them. Each goes back to the head of its queue (its message
  restored from kombu's unacknowledged hash) or is sent again. The worker supervisor does the same the moment
  it sees a worker die (:meth:`Janitor.recover_host`), and a worker does it for its own hostname at start;
- **recovers lost chunks** (Redis broker): a chunk sent before the oldest message still waiting in its queue,
  and taken by no worker, was popped by a worker that died before kombu recorded it as unacknowledged, or its
  message was never published. It is sent again;
- **keeps lanes moving**: a lane (a model's queue for one tier) with chunks held back and room in its budget
  releases them (a finished chunk releases the next one itself; this catches a release lost to a crash), and
  a chunk whose record expired with its job stops counting as in flight;
- **reconciles backlogs**: a model with no chunk anywhere has an empty backlog.

The sweeps over shared state take a lease in Redis, so one worker sweeps at a time. Sending a chunk twice is
harmless (a chunk that is done is a no-op, an item's result is stored once), so every step may be repeated.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Callable

import orjson
import redis

from batchery import keys
from batchery.faults.handoff import draw_handoff_fault
from batchery.recovery import broker
from batchery.settings import Settings
from batchery.store.backlog import Backlog
from batchery.store.handoff import Handoff, Handoffs
from batchery.store.heartbeats import is_alive

if TYPE_CHECKING:
    from batchery.tasks.enqueue import Enqueuer
    from batchery.workers.heartbeat import Heartbeat

log = logging.getLogger(__name__)

#: Waiters served or sent again per step of a handoff, and handoffs taken together (their items grouped).
HANDOFF_PAGE = 1000
HANDOFFS_PER_STEP = 1000
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Janitor:
    def __init__(
        self,
        enqueuer: "Enqueuer",
        settings: Settings,
        hostname: str,
        heartbeat: Callable[[], "Heartbeat | None"] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self.enqueuer = enqueuer
        self.celery = enqueuer.celery
        self.store = enqueuer.store
        self.redis = enqueuer.store.redis
        self.chunks = enqueuer.dispatcher.chunks
        self.handoffs = Handoffs(enqueuer.store)
        self.backlog = Backlog(enqueuer.store.redis)
        self.settings = settings
        self.hostname = hostname
        self.heartbeat = heartbeat
        self.rng = rng or random.Random()
        self.on_redis = broker.is_redis_broker(self.celery)
        self._release_lease = self.redis.register_script(_RELEASE_LEASE)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)

    def start(self) -> "Janitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def wake(self, *_: object) -> None:
        """Sweep now rather than at the next interval (a write just left handoffs behind)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.janitor_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sweep()
            except redis.RedisError as exc:
                log.warning("janitor: sweep interrupted, to be resumed: %s", exc)
            except Exception:
                log.exception("janitor: sweep failed")

    def sweep(self) -> None:
        """One pass of every duty; safe to run at any time, from any number of processes."""
        self.drain_handoffs()
        with self._lease("chunks", self.settings.janitor_grace_s) as held:
            if held:
                self.recover_dead_holders()
                if self.on_redis:
                    self.recover_lost_chunks()
                self.keep_lanes_moving()
                self.reconcile_backlogs()

    # -- handoffs ---------------------------------------------------------------------------------------

    def drain_handoffs(self, budget_s: float = 10.0) -> int:
        """Finish pending handoffs (for up to ``budget_s``); returns how many waiters were dealt with."""
        done = 0
        deadline = time.monotonic() + budget_s
        with self._lease("handoffs", 60) as held:
            while held and time.monotonic() < deadline:
                pending = self.handoffs.pending(HANDOFFS_PER_STEP)
                if not pending:
                    break
                done += self._share([h for h in pending if h.kind == "share"])
                done += self._release([h for h in pending if h.kind == "release"])
        return done

    def _share(self, pending: list[Handoff]) -> int:
        served = 0
        for handoff in pending:
            while True:
                self._maybe_fault(handoff)
                left = self.handoffs.share(handoff, HANDOFF_PAGE)
                served += HANDOFF_PAGE
                if left == 0:
                    break
        return served

    def _release(self, pending: list[Handoff]) -> int:
        """Send the waiters of released computations to be computed anew, grouped by job into chunks."""
        if not pending:
            return 0
        by_job: dict[str, list[tuple[int, object]]] = {}
        taken: list[tuple[Handoff, int]] = []
        for handoff, waiters in zip(pending, self.handoffs.waiters(pending, HANDOFF_PAGE)):
            value = orjson.loads(handoff.input) if handoff.input else None
            for job_id, index in waiters:
                by_job.setdefault(job_id, []).append((index, value))
            taken.append((handoff, len(waiters)))
        for job_id, items in by_job.items():
            sent = self.enqueuer.resubmit(job_id, items)
            if sent:
                log.info("janitor: %d items of job %s sent again, their shared computation ended elsewhere", sent, job_id)
        self._maybe_fault(pending[0])
        self.handoffs.advance(taken)
        return sum(count for _, count in taken)

    def _maybe_fault(self, handoff: Handoff) -> None:
        """An injected fault, once per step of a drain (``BATCHERY_FAULT_HANDOFF_RATE``)."""
        draw_handoff_fault(self.settings, self.rng, handoff.key.split("@", 1)[0], f"{handoff.kind} handoff {handoff.number}")

    # -- chunks -----------------------------------------------------------------------------------------

    def recover_host(self, hostname: str) -> int:
        """Every chunk a dead worker held goes back to work; returns how many. Call it only for a worker known
        dead: one still running would find its chunks run twice (harmless, but wasted)."""
        refs = self.chunks.held_by(hostname)
        if not refs:
            self.chunks.forget_holder(hostname)
            return 0
        with broker.BrokerView(self.celery) as view:
            recovered = self._recover_refs(view, hostname, refs)
        self.chunks.forget_holder(hostname)
        if recovered:
            log.warning("janitor: %d chunks held by %s, which is gone, are back in their queues", recovered, hostname)
        return recovered

    def _recover_refs(self, view: broker.BrokerView, hostname: str, refs: list[tuple[str, int]]) -> int:
        unacked = view.unacked_by_task() if self.on_redis else {}
        recovered = 0
        for job_id, number in refs:
            record = self.chunks.get(job_id, number)
            if record is None or record.holder != hostname:
                continue
            found = unacked.get(record.task_id)
            if found is not None:
                self.chunks.requeue(job_id, number, record.task_id, time.time(), hostname)
                view.restore(found.tag)
            elif self.on_redis:
                self.enqueuer.dispatcher.resend(record, hostname)
            else:  # RabbitMQ requeued the message itself when the worker's connection dropped
                self.chunks.requeue(job_id, number, record.task_id, time.time(), hostname)
            recovered += 1
        return recovered

    def recover_dead_holders(self) -> int:
        """Chunks held by workers whose heartbeat is gone. Not while this process's own heartbeat has just come
        back from a gap: after a Redis outage every peer needs a beat's time to show it is alive."""
        beat = self.heartbeat()
        if beat is None or beat.steady_for() < self.settings.worker_heartbeat_ttl_s:
            return 0
        return sum(
            self.recover_host(host)
            for host in self.chunks.holders()
            if host != self.hostname and not is_alive(self.redis, host)
        )

    def recover_lost_chunks(self) -> int:
        """Chunks sent before the oldest message waiting in their queue and taken by no worker (Redis broker)."""
        with broker.BrokerView(self.celery) as view:
            return self._recover_lost(view)

    def _recover_lost(self, view: broker.BrokerView) -> int:
        now = time.time()
        grace = self.settings.janitor_grace_s
        unacked: dict[str, broker.Unacked] | None = None
        recovered = 0
        for spec, queue in self._queues():
            oldest = view.oldest_sent(queue)
            cutoff = now - grace if oldest is None else min(oldest, now - grace)
            for job_id, number in self.chunks.queued_before(queue, cutoff):
                record = self.chunks.get(job_id, number)
                if record is None:
                    self.redis.zrem(keys.queued(queue), keys.chunk_ref(job_id, number))
                    continue
                unacked = view.unacked_by_task() if unacked is None else unacked
                found = unacked.get(record.task_id)
                if found is None:
                    self.enqueuer.dispatcher.resend(record)
                elif found.delivered_at < now - grace:  # delivered, and never started: its worker is gone
                    self.chunks.requeue(job_id, number, record.task_id, now)
                    view.restore(found.tag)
                else:
                    continue
                recovered += 1
                log.warning("janitor: chunk %s.%s of %s was lost on its way to a worker; sent again", job_id, number, spec.key)
        return recovered

    def keep_lanes_moving(self) -> int:
        """Release what each lane's budget allows (a release lost to a crash would leave a lane waiting), after
        dropping from the in-flight count chunks whose records expired with their jobs. Returns how many."""
        released = 0
        for _, queue in self._queues():
            self.chunks.prune_running(queue)
            if self.chunks.lanes_waiting(queue):
                released += self.enqueuer.dispatcher.pump(queue)
        return released

    def reconcile_backlogs(self) -> None:
        """A model with no chunk held back, queued or running anywhere has nothing in its backlog."""
        for spec in self.enqueuer.registry:
            if any(self.chunks.open_count(queue) for queue in spec.queues):
                continue
            left = self.backlog.reconcile_idle(spec.key)
            if left > 0:
                log.warning("janitor: model %s had %d items counted in its backlog and none anywhere; reset", spec.key, left)

    def _queues(self) -> list[tuple[object, str]]:
        return [(spec, queue) for spec in self.enqueuer.registry for queue in spec.queues]

    # -- leases -----------------------------------------------------------------------------------------

    def _lease(self, task: str, ttl_s: float) -> "_Lease":
        return _Lease(self, keys.janitor(task), ttl_s)


class _Lease:
    """``with janitor._lease(...) as held``: held is True when this process got the lease; it is given back after."""

    def __init__(self, janitor: Janitor, key: str, ttl_s: float) -> None:
        self.janitor = janitor
        self.key = key
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.token = f"{janitor.hostname}:{threading.get_ident()}:{time.monotonic()}"
        self.held = False

    def __enter__(self) -> bool:
        self.held = bool(self.janitor.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held:
            try:
                self.janitor._release_lease(keys=[self.key], args=[self.token])
            except redis.RedisError:
                pass  # it expires
