"""A fault for the janitor's handoffs: sharing results with waiting items, and sending them to be computed anew."""

from __future__ import annotations

import logging
import random

import redis

from batchery.monitoring.metrics import FAULTS_INJECTED
from batchery.settings import Settings

log = logging.getLogger(__name__)


class InjectedHandoffFault(redis.ConnectionError):
    """A fault injected into a handoff on purpose (``BATCHERY_FAULT_HANDOFF_RATE``): as if Redis dropped the
    connection, or the process died, half-way through one."""


def draw_handoff_fault(settings: Settings, rng: random.Random, model: str, what: str) -> None:
    """Raise, with ``BATCHERY_FAULT_HANDOFF_RATE``'s probability, at the worst moment of a handoff step: after
    its work, before it is marked done, which leaves that work to be redone by the next sweep."""
    rate = settings.fault_handoff_rate
    if rate > 0 and rng.random() < rate:
        FAULTS_INJECTED.labels(model, "handoff").inc()
        log.warning("injected handoff fault (%s)", what)
        raise InjectedHandoffFault(f"injected handoff fault in {what}")
