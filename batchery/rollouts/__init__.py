"""Several versions of one model at once: jobs split across them by weight, and a canary rolled back when it
does worse than its primary.

- :mod:`~batchery.rollouts.routing`: which version a job's key falls on, for given weights (a pure function).
- :mod:`~batchery.rollouts.weights`: the weights in force, the models file's unless an admin or a rollback
  set others in Redis, which every API process reads.
- :mod:`~batchery.rollouts.router`: a model reference and a job to the version that runs it.
- :mod:`~batchery.rollouts.watcher`: the thread in every worker that compares each canary with its primary.
"""

from batchery.rollouts.router import Router
from batchery.rollouts.routing import pick
from batchery.rollouts.watcher import CanaryWatcher, judge
from batchery.rollouts.weights import WeightStore

__all__ = ["CanaryWatcher", "Router", "WeightStore", "judge", "pick"]
