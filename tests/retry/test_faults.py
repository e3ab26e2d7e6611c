"""Injected faults through the real batcher and job store: retries and isolation keep every item."""

from __future__ import annotations

import random
import uuid

import pytest

from batchery.batching import Batcher
from batchery.errors import ConfigError
from batchery.models.registry import ModelSpec
from batchery.retry import RetryPolicy
from batchery.faults.injection import FaultPlan, FaultyRuntime, with_faults
from batchery.runtimes.echo import EchoRuntime
from batchery.settings import Settings
from batchery.store.codec import decode

SPEC = ModelSpec("faulty", "echo", max_batch_size=16, max_wait_ms=1)


def run_job(store, runtime, retry: RetryPolicy, total: int = 400) -> tuple[str, list]:
    batcher = Batcher(runtime, store, retry=retry).start()
    job_id = uuid.uuid4().hex
    store.create(job_id, {"model": "faulty", "version": "1", "total": total})
    ticket = batcher.submit(job_id, [(i, i) for i in range(total)])
    assert ticket.wait(60)
    batcher.stop()
    return job_id, [decode(raw) for _, raw in store.outputs(job_id, 0, total)]


def test_at_a_transient_fault_rate_of_0_3_every_item_still_succeeds(store):
    runtime = FaultyRuntime(EchoRuntime(SPEC, "cpu"), FaultPlan(transient_rate=0.3), random.Random(7))
    job_id, results = run_job(store, runtime, RetryPolicy(retries=7, base_s=0.001, max_s=0.005))
    assert results == [("output", i) for i in range(400)]
    assert store.get(job_id)["status"] == "completed"
    assert runtime.injected["transient"] > 5, "faults must really have been injected and retried"


def test_at_a_rate_of_1_every_item_ends_with_an_error_after_its_attempts(store):
    runtime = FaultyRuntime(EchoRuntime(SPEC, "cpu"), FaultPlan(transient_rate=1.0), random.Random(1))
    job_id, results = run_job(store, runtime, RetryPolicy(retries=1, base_s=0.001, max_s=0.002), total=32)
    assert [kind for kind, _ in results] == ["error"] * 32
    assert {e["code"] for _, e in results} == {"transient_error"}
    assert all("injected" in e["message"] for _, e in results)
    job = store.get(job_id)
    assert (job["status"], job["failed"]) == ("completed", 32)


def test_oom_and_latency_faults_are_drawn_and_counted():
    runtime = FaultyRuntime(EchoRuntime(SPEC, "cpu"), FaultPlan(oom_rate=1.0, latency_rate=1.0, latency_ms=1), random.Random(0))
    with pytest.raises(Exception, match="out-of-memory"):
        runtime.run([1])
    assert runtime.injected == {"latency": 1, "oom": 1}


def test_faults_are_off_by_default_and_per_model_options_override_settings():
    echo = EchoRuntime(SPEC, "cpu")
    assert with_faults(echo, Settings()) is echo
    spec = ModelSpec("m", "echo", options={"faults": {"transient_rate": 0.5}})
    plan = FaultPlan.for_model(Settings(fault_crash_rate=0.1), spec)
    assert (plan.transient_rate, plan.crash_rate) == (0.5, 0.1)
    with pytest.raises(ConfigError, match="unknown options.faults"):
        FaultPlan.for_model(Settings(), ModelSpec("m", "echo", options={"faults": {"typo_rate": 1}}))
