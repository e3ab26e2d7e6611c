"""Priority tiers: every job and predict carries one, and work of a higher tier goes first.

    tier         rank  default for                      what it is for
    interactive  0     POST /v1/models/<name>/predict   online calls that a person or a service waits on
    standard     1     POST /v1/jobs                    ordinary jobs
    bulk         2     (ask for it)                     backfills: throughput matters, latency does not

A tier can be named or given by its rank. Higher tiers reach the workers first (each tier has its own queue,
``batchery.<model>.<tier>``, consumed highest first), and inside a worker the batcher fills each batch from
the highest tier waiting; a lower tier still gets a batch at least every ``STARVATION_BATCHES + 1`` batches
while it has items waiting, so nothing starves.
"""

from __future__ import annotations

from typing import Any

from batchery.errors import BadRequest

TIERS = ("interactive", "standard", "bulk")
INTERACTIVE, STANDARD, BULK = TIERS
#: A lower tier that waited through this many batches of higher tiers in a row gets the next one.
STARVATION_BATCHES = 4


def rank(tier: str) -> int:
    """0 for the highest tier."""
    return TIERS.index(tier)


def parse(value: Any, default: str) -> str:
    """A tier from a request: a name, a rank (0-2), or absent (``default``); 400 naming the valid ones."""
    if value is None:
        return default
    if isinstance(value, str) and value in TIERS:
        return value
    if isinstance(value, float) and value.is_integer():  # JSON does not tell 1 from 1.0
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(TIERS):
        return TIERS[value]
    if isinstance(value, str) and value.isdigit() and int(value) < len(TIERS):
        return TIERS[int(value)]
    choices = ", ".join(f"{name} ({n})" for n, name in enumerate(TIERS))
    raise BadRequest(f"unknown tier {value!r}: the tiers are {choices}")


def of_job(job: dict[str, Any]) -> str:
    """A job's tier (a job recorded before tiers existed is ``standard``)."""
    return job.get("tier") or STANDARD
