"""Running inputs now and waiting for them: what predict and ``/v1/embeddings`` share.

The inputs go through the same queues and batcher as any job, as a job of the request's API key: held to its
tier ceiling by the caller, counted into its quotas, and out again once answered. Past
``BATCHERY_PREDICT_TIMEOUT_S`` the job is cancelled and the answer is 504.
"""

from __future__ import annotations

from typing import Any, Sequence

from batchery.app import tenancy
from batchery.app.services import Services
from batchery.errors import Timeout
from batchery.models.registry import ModelSpec
from batchery.monitoring.logs import bind
from batchery.monitoring.metrics import record_submission
from batchery.store.codec import decode
from batchery.tasks.enqueue import new_job_id


def run_now(
    svc: Services, model: str, inputs: Sequence[Any], tier: str, routing_key: str | None = None
) -> tuple[ModelSpec, list[tuple[str, Any]]]:
    """The version of ``model`` that ran the inputs (:class:`batchery.rollouts.Router`'s choice), and ``(kind,
    value)`` per input, in order, as :func:`batchery.store.codec.decode` reads each result."""
    job_id = new_job_id()
    spec = svc.router.route(model, routing_key or job_id)
    svc.require_worker(spec)
    with tenancy.admitted(svc, job_id, len(inputs)):
        svc.enqueuer.submit(spec, inputs, job_id=job_id, ttl_s=_ttl(svc), tier=tier, owner=tenancy.owner())
    bind(job_id)
    record_submission(spec.key, len(inputs))
    try:
        if not svc.store.wait_done(job_id, svc.settings.predict_timeout_s):
            svc.enqueuer.cancel(job_id)
            raise Timeout(f"no answer within {svc.settings.predict_timeout_s:g}s; the request was cancelled")
    finally:
        tenancy.count_out(svc, job_id, tenancy.owner())
    unrun = ("error", {"code": "cancelled", "message": "the request's job ended (cancelled) before this item ran"})
    results: list[tuple[str, Any]] = [unrun] * len(inputs)
    for index, raw in svc.store.outputs(job_id, 0, len(inputs)):
        results[index] = decode(raw)
    return spec, results


def _ttl(svc: Services) -> int:
    return max(int(svc.settings.predict_timeout_s) * 4, 60)
