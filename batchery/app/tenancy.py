"""Who a request comes from, and what that lets it see and do.

With API keys on, every key is a tenant (:class:`Tenant`): a name, the highest tier it may use, its quotas,
and whether it is an admin. :mod:`batchery.app.auth` finds the tenant of each request's key and puts it on
``flask.g``; the handlers ask this module what follows from it:

- a job belongs to the tenant that submitted it (the job's ``owner`` is the tenant's name), and any other
  tenant is told 404 about it, as about a job that never was, unless it is an admin;
- a request may not ask for a tier above the tenant's ceiling (403), and one that asks for none gets the
  endpoint's default lowered to the ceiling;
- a submission counts into the tenant's quotas (:mod:`batchery.store.quotas`), and is refused with 429
  beyond them.

With keys off there is no tenant, and nothing here changes anything.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from flask import g

from batchery import tiers
from batchery.app.services import Services
from batchery.errors import PayloadTooLarge, QuotaExceeded, TierNotAllowed
from batchery.store.quotas import Admission, Limits


@dataclass(frozen=True)
class Tenant:
    """What one API key may do. Keys with the same name are one tenant: they share jobs and quotas."""

    name: str
    #: The highest tier it may use: ``interactive`` is any.
    tier: str = tiers.INTERACTIVE
    #: 0 is no limit.
    items_per_minute: int = 0
    items_in_flight: int = 0
    admin: bool = False

    @property
    def limits(self) -> Limits:
        return Limits(self.items_per_minute, self.items_in_flight)


def current() -> Tenant | None:
    """The tenant of this request's API key; None when keys are off."""
    return g.get("tenant")


def owner() -> str | None:
    """The name a job submitted now is recorded under (None with keys off: jobs belong to nobody, as before)."""
    tenant = current()
    return tenant.name if tenant is not None else None


def sees_everything() -> bool:
    tenant = current()
    return tenant is None or tenant.admin


def sees(job: dict[str, Any]) -> bool:
    """Whether this request may see (and cancel) ``job``: its own, or any with keys off or as an admin.

    A job that no key submitted (from before keys were on) is an admin's alone.
    """
    return sees_everything() or job.get("owner") == owner()


def default_tier(default: str) -> str:
    """The tier of a request that asks for none: the endpoint's ``default``, or the key's ceiling if lower.

    A key bound to ``standard`` thus predicts at ``standard`` without having to say so.
    """
    tenant = current()
    if tenant is None:
        return default
    return tiers.TIERS[max(tiers.rank(default), tiers.rank(tenant.tier))]


def check_tier(tier: str) -> None:
    """403 for a tier above the key's ceiling, before anything is queued."""
    tenant = current()
    if tenant is not None and tiers.rank(tier) < tiers.rank(tenant.tier):
        allowed = ", ".join(tiers.TIERS[tiers.rank(tenant.tier):])
        raise TierNotAllowed(
            f"API key {tenant.name!r} may not use tier {tier!r}: its ceiling is {tenant.tier!r} (it may use {allowed})"
        )


@contextmanager
def admitted(svc: Services, job_id: str, items: int) -> Iterator[None]:
    """Count a submission of ``items`` into the key's quotas for the block, and give them back if the block
    raises (a full backlog, a broker that refused): a submission that queued nothing counts nothing.

    429 beyond a quota, with ``Retry-After``; 413 for a job that no quota window could ever take.
    """
    tenant = current()
    if tenant is None or not tenant.limits:
        yield
        return
    _check_fits(tenant, items)
    found = svc.quotas.admit(tenant.name, job_id, items, tenant.limits)
    if not isinstance(found, Admission):
        limit = getattr(tenant, found.limit)
        what = "in the last minute" if found.limit == "items_per_minute" else "submitted and not yet done"
        raise QuotaExceeded(
            f"API key {tenant.name!r} would pass its quota of {limit} {found.limit.replace('_', ' ')} ({found.limit}): "
            f"{found.used} items {what}, and this request has {items}; nothing was queued",
            retry_after_s=found.retry_after_s or svc.settings.retry_after_s,
        )
    try:
        yield
    except BaseException:
        svc.quotas.give_back(found)
        raise


def _check_fits(tenant: Tenant, items: int) -> None:
    """A request larger than a quota itself would be refused forever: 413, so that no client waits for it."""
    for limit in ("items_per_minute", "items_in_flight"):
        bound = getattr(tenant, limit)
        if bound and items > bound:
            raise PayloadTooLarge(
                f"{items} items, over API key {tenant.name!r}'s quota of {bound} {limit.replace('_', ' ')} ({limit}): "
                "split the request"
            )


def count_out(svc: Services, job_id: str, name: str | None) -> None:
    """The job ended where the API saw it (cancelled, answered): its items leave the in-flight count of its
    owner ``name`` at once, rather than at the owner's next sweep."""
    if name:
        svc.quotas.count_out(name, job_id)
