"""How many processes a CPU pool should run, from its models' backlog, its size and how long things lasted.

A pure decision with no clock and no Redis of its own, so that it is tested as a function: the pool that applies
it (:mod:`batchery.cli.scaler`) reads the backlog counters, times the changes and spawns or drains processes.

- **Up** as soon as the backlog is more than ``target_backlog_per_process`` items per process, straight to the
  size that holds it at the target (within the bounds), at most once per ``scale_up_cooldown_s``: a new process
  needs seconds to load and warm its models, and one decision per warm-up is enough.
- **Down** only when a smaller pool would hold the backlog at no more than ``down_fill`` of its target, and that
  has held for ``scale_down_cooldown_s`` without a break. The gap between the two thresholds is the hysteresis:
  a backlog hovering at one process's worth does not start and stop a process every few seconds, and a burst
  that pauses between two jobs does not lose its processes. Down also goes straight to the size wanted.
- ``min_processes`` and ``max_processes`` bound both; a pool outside them returns inside at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from batchery import defaults
from batchery.errors import ConfigError
from batchery.settings import Settings


@dataclass(frozen=True)
class Decision:
    """The size the pool should have; ``reason`` says why it changes (empty when it keeps its size); ``low``
    says the backlog calls for fewer processes at this moment, so that the caller times how long it has."""

    size: int
    reason: str = ""
    low: bool = False


@dataclass(frozen=True)
class ScalePolicy:
    min_processes: int
    max_processes: int
    target_backlog_per_process: int = defaults.WORKER_TARGET_BACKLOG_PER_PROCESS
    scale_up_cooldown_s: float = defaults.WORKER_SCALE_UP_COOLDOWN_S
    scale_down_cooldown_s: float = defaults.WORKER_SCALE_DOWN_COOLDOWN_S
    down_fill: float = defaults.SCALE_DOWN_FILL

    def __post_init__(self) -> None:
        if not 1 <= self.min_processes <= self.max_processes:
            raise ConfigError(
                f"a CPU pool runs between 1 and its maximum processes: min {self.min_processes}, max {self.max_processes}"
            )
        if self.target_backlog_per_process < 1:
            raise ConfigError("BATCHERY_WORKER_TARGET_BACKLOG_PER_PROCESS must be at least 1 item")
        if self.scale_up_cooldown_s < 0 or self.scale_down_cooldown_s < 0:
            raise ConfigError("the scaling cooldowns cannot be negative")
        if not 0 < self.down_fill <= 1:
            raise ConfigError(f"down_fill is a share of the target, in (0, 1]: not {self.down_fill}")

    @classmethod
    def from_settings(cls, settings: Settings, cores: int) -> "ScalePolicy":
        """The bounds the settings give: none set is today's fixed pool of ``worker_processes`` (0: ``cores``);
        only a maximum starts from 1; only a minimum may grow to that fixed size (or stays at the minimum)."""
        low, high = settings.worker_min_processes, settings.worker_max_processes
        fixed = settings.worker_processes or cores
        if low < 0 or high < 0:
            raise ConfigError("BATCHERY_WORKER_MIN_PROCESSES and _MAX_PROCESSES cannot be negative")
        if not low and not high:
            low = high = fixed
        elif not high:
            high = max(low, fixed)
        elif not low:
            low = 1
        return cls(
            low,
            high,
            settings.worker_target_backlog_per_process,
            settings.worker_scale_up_cooldown_s,
            settings.worker_scale_down_cooldown_s,
        )

    @property
    def fixed(self) -> bool:
        """A pool with nothing to decide: its size is its bounds."""
        return self.min_processes == self.max_processes

    def start_size(self, requested: int) -> int:
        """The size a pool starts at: ``requested`` (``--processes``) within the bounds, else the minimum."""
        return self.clamp(requested) if requested else self.min_processes

    def clamp(self, size: int) -> int:
        return max(self.min_processes, min(self.max_processes, size))

    def decide(self, backlog: Mapping[str, int], size: int, since_change_s: float, low_for_s: float) -> Decision:
        """The size for a pool of ``size`` processes whose models have ``backlog`` items sent and not done, which
        last changed size ``since_change_s`` ago and whose backlog has been low for ``low_for_s`` (0: it is not)."""
        if size != self.clamp(size):
            bound = "minimum" if size < self.min_processes else "maximum"
            return Decision(self.clamp(size), f"{size} processes is outside the {bound} of {self.clamp(size)}")
        total = sum(max(0, items) for items in backlog.values())
        up = self.clamp(math.ceil(total / self.target_backlog_per_process))
        if up > size:
            if since_change_s < self.scale_up_cooldown_s:
                return Decision(size)
            each = f"{total / max(size, 1):,.0f} items per process"
            return Decision(
                up, f"backlog {describe(backlog)}: {each}, over the target of {self.target_backlog_per_process:,}"
            )
        down = self.clamp(math.ceil(total / (self.target_backlog_per_process * self.down_fill)))
        if down >= size:
            return Decision(size)
        if low_for_s < self.scale_down_cooldown_s:
            return Decision(size, low=True)
        share = f"at most {self.down_fill:.0%} of the target of {self.target_backlog_per_process:,} per process"
        return Decision(
            down, f"backlog {describe(backlog)} for {low_for_s:.1f}s: a pool of {down} carries {share}", True
        )


def describe(backlog: Mapping[str, int]) -> str:
    """``1,536 items (echo 1,024, minilm 512)``: the total, and each model that has any, largest first."""
    total = sum(max(0, items) for items in backlog.values())
    parts = [f"{model} {items:,}" for model, items in sorted(backlog.items(), key=lambda kv: -kv[1]) if items > 0]
    return f"{total:,} items" + (f" ({', '.join(parts)})" if parts else "")
