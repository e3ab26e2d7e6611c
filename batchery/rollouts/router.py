"""From what a client asked for to the version that runs it.

``name@version`` runs that version. A bare name is split across the model's versions by their weights
(:mod:`batchery.rollouts.weights`), deterministically by the job's routing key: the client's, if it gave one,
else the job's id. A model of one version costs nothing here: no Redis read.
"""

from __future__ import annotations

from batchery.models.registry import ModelSpec, Registry
from batchery.rollouts.routing import pick
from batchery.rollouts.weights import WeightStore


class Router:
    def __init__(self, registry: Registry, weights: WeightStore) -> None:
        self.registry = registry
        self.weights = weights

    def route(self, ref: str, key: str) -> ModelSpec:
        """The version that runs a job of ``ref`` whose routing key is ``key``.

        When every weight is 0 (a rollback of the only version that had any) the primary runs it.
        """
        spec = self.registry.get(ref)
        if "@" in ref or len(self.registry.versions(ref)) == 1:
            return spec
        weights, _ = self.weights.current(ref)
        version = pick(weights, key)
        return spec if version is None else self.registry.get(f"{spec.name}@{version}")
