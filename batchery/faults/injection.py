"""Failure injection: faults on purpose, to prove that retries, isolation and redelivery keep every item.

Off by default. Rates come from the settings (``BATCHERY_FAULT_*``) and a model may override them with its
``options.faults`` table. The runtime is wrapped, so an injected fault takes exactly the path a real one
would: the transient retries, the bisection, a dead worker's redelivery. Every injected fault is logged as
injected and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import redis

from batchery.errors import ConfigError, DeviceOutOfMemory, TransientError
from batchery.models.registry import ModelSpec
from batchery.monitoring.metrics import FAULTS_INJECTED
from batchery.runtimes.base import Runtime
from batchery.settings import Settings

if TYPE_CHECKING:
    from batchery.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultPlan:
    """Per-batch probabilities of each fault; ``latency_ms`` is the spike added when one is drawn."""

    transient_rate: float = 0.0
    crash_rate: float = 0.0
    oom_rate: float = 0.0
    latency_rate: float = 0.0
    latency_ms: float = 0.0
    store_rate: float = 0.0
    fatal_rate: float = 0.0

    @property
    def active(self) -> bool:
        return any((self.transient_rate, self.crash_rate, self.oom_rate, self.latency_rate, self.fatal_rate))

    @classmethod
    def for_model(cls, settings: Settings, spec: ModelSpec) -> "FaultPlan":
        plan = cls(**{f.name: getattr(settings, "fault_" + f.name) for f in dataclasses.fields(cls)})
        overrides = dict(spec.options.get("faults", {}))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"model {spec.name!r}: unknown options.faults {sorted(unknown)}")
        return dataclasses.replace(plan, **overrides)


class InjectedFatal(BaseException):
    """What a bug in a batcher stage looks like to it: not an error it handles, so the stage dies
    (``BATCHERY_FAULT_FATAL_RATE``), which proves a dead batcher wedges nothing."""


class FaultyRuntime(Runtime):
    """Wraps a real runtime and draws faults before each batch it runs."""

    def __init__(self, inner: Runtime, plan: FaultPlan, rng: random.Random | None = None) -> None:
        super().__init__(inner.spec, inner.device)
        self.inner = inner
        self.plan = plan
        self.rng = rng or random.Random()
        self.injected: Counter[str] = Counter()

    def preprocess(self, inputs: Sequence[Any]) -> list[Any]:
        return self.inner.preprocess(inputs)

    def lengths(self, preprocessed: Sequence[Any]) -> list[int] | None:
        return self.inner.lengths(preprocessed)

    def prepare(self, inputs: Sequence[Any]) -> Any:
        return self.inner.prepare(inputs)

    def token_counts(self, prepared: Any) -> tuple[int, int] | None:
        return self.inner.token_counts(prepared)

    def run(self, prepared: Any) -> Sequence[Any]:
        plan = self.plan
        if self._draw("latency", plan.latency_rate):
            time.sleep(plan.latency_ms / 1000)
        if self._draw("crash", plan.crash_rate):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._draw("fatal", plan.fatal_rate):
            raise InjectedFatal(f"injected fatal fault in the batcher of model {self.spec.name}")
        if self._draw("oom", plan.oom_rate):
            raise DeviceOutOfMemory(f"injected out-of-memory fault in model {self.spec.name}")
        if self._draw("transient", plan.transient_rate):
            raise TransientError(f"injected transient fault in model {self.spec.name}")
        return self.inner.run(prepared)

    def release_memory(self) -> None:
        self.inner.release_memory()

    def close(self) -> None:
        self.inner.close()

    def _draw(self, fault: str, rate: float) -> bool:
        if rate <= 0 or self.rng.random() >= rate:
            return False
        self.injected[fault] += 1
        FAULTS_INJECTED.labels(self.spec.key, fault).inc()
        log.warning("injected %s fault in model %s (%d so far)", fault, self.spec.name, self.injected[fault])
        return True


def with_faults(runtime: Runtime, settings: Settings) -> Runtime:
    """The runtime itself when no fault is configured for its model, else wrapped."""
    plan = FaultPlan.for_model(settings, runtime.spec)
    return FaultyRuntime(runtime, plan) if plan.active else runtime


class FaultyStore:
    """Wraps the job store a batcher writes through: a drawn fault makes storing a batch fail like a lost
    connection, which proves the chunk-level retry (the chunk task is retried and redoes what is missing)."""

    def __init__(self, inner: "JobStore", spec: ModelSpec, rate: float, rng: random.Random | None = None) -> None:
        self.inner = inner
        self.spec = spec
        self.rate = rate
        self.rng = rng or random.Random()
        self.injected = 0

    def record(self, *args: Any, **kwargs: Any) -> Any:
        if self.rng.random() < self.rate:
            self.injected += 1
            FAULTS_INJECTED.labels(self.spec.key, "store").inc()
            log.warning("injected store fault in model %s (%d so far)", self.spec.name, self.injected)
            raise redis.ConnectionError(f"injected store fault in model {self.spec.name}")
        return self.inner.record(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def with_store_faults(store: "JobStore", spec: ModelSpec, settings: Settings) -> "JobStore":
    """The store itself unless the model's plan has a ``store_rate``; then a :class:`FaultyStore`."""
    rate = FaultPlan.for_model(settings, spec).store_rate
    return FaultyStore(store, spec, rate) if rate > 0 else store  # type: ignore[return-value]
