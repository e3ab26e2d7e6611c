"""When a CPU pool runs more or fewer worker processes: the policy, a pure decision on its backlog and clock."""

from batchery.scaling.policy import Decision, ScalePolicy

__all__ = ["Decision", "ScalePolicy"]
