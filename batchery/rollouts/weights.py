"""The weights in force for a model's versions, and who set them.

The models file's weights hold unless Redis holds others for the model (:func:`batchery.keys.weights`), set by
an admin (``PUT /v1/models/<name>/weights``) or by a rollback. Those stay until an admin deletes them, so an
edit of the file does not quietly undo a rollback. Every API process reads Redis on each routed submission, so
a change reaches them all at once; the file is looked at (its mtime and size, a stat) on each read too, and its
weights read again when it changed. Only weights change that way: a version the file adds needs a restart, for
its queues and workers.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import redis

from batchery import keys
from batchery.errors import BadRequest, BatcheryError
from batchery.models.registry import Registry, check_weight, read_weights

log = logging.getLogger(__name__)

#: Set a version's weight to 0 unless it is 0 already; with no override yet, start from the file's weights
#: (ARGV after the version: version, weight, ...). Returns 1 when it changed the weight.
_ZERO = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local weight = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if weight == nil or weight <= 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], '0')
return 1
"""


class WeightStore:
    def __init__(self, client: redis.Redis, registry: Registry, models_file: str = "") -> None:
        self.redis = client
        self.registry = registry
        self.models_file = models_file
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, dict[str, float]] = {name: registry.weights(name) for name in registry.names()}
        self._zero = client.register_script(_ZERO)

    def current(self, name: str) -> tuple[dict[str, float], str]:
        """The weights in force, per version (the primary first), and where they come from: ``file`` or
        ``override``."""
        override = self.override(name)
        source, found = ("override", override) if override is not None else ("file", self.file_weights(name))
        return {v.version: found.get(v.version, 0.0) for v in self.registry.versions(name)}, source

    def file_weights(self, name: str) -> dict[str, float]:
        self._reload()
        return dict(self._file.get(self.registry.get(name).name) or self.registry.weights(name))

    def override(self, name: str) -> dict[str, float] | None:
        raw = self.redis.hgetall(keys.weights(self.registry.get(name).name))
        return {k.decode(): float(v) for k, v in raw.items()} if raw else None

    def set(self, name: str, weights: Any) -> dict[str, float]:
        """Override the file's weights with ``weights`` (version -> weight; versions left out get 0)."""
        checked = self.check(name, weights)
        key = keys.weights(self.registry.get(name).name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={version: repr(weight) for version, weight in checked.items()})
        pipe.execute()
        return checked

    def clear(self, name: str) -> bool:
        """Back to the models file's weights; False when there was no override."""
        return bool(self.redis.delete(keys.weights(self.registry.get(name).name)))

    def zero(self, name: str, version: str) -> bool:
        """Give ``version`` no more jobs; True only for the call that changed its weight, so that of several
        watchers deciding the same, one logs and counts the rollback."""
        spec = self.registry.get(name)
        start = [str(x) for pair in self.file_weights(name).items() for x in pair]
        return bool(self._zero(keys=[keys.weights(spec.name)], args=[version, *start]))

    def record_rollback(self, name: str, version: str, why: str, at: float) -> None:
        event = json.dumps({"at": at, "why": why})
        self.redis.hset(keys.rollbacks(self.registry.get(name).name), version, event)

    def rollbacks(self, name: str) -> dict[str, Any]:
        """The last rollback of each version that had one: ``{version: {"at", "why"}}``."""
        raw = self.redis.hgetall(keys.rollbacks(self.registry.get(name).name))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def check(self, name: str, weights: Any) -> dict[str, float]:
        """A client's weights: an object of the model's versions to numbers >= 0, not all 0 (else a 400)."""
        versions = [v.version for v in self.registry.versions(name)]
        if not isinstance(weights, Mapping) or not weights:
            raise BadRequest(f"'weights' must be an object of versions to weights, e.g. {{\"{versions[0]}\": 1}}")
        unknown = sorted(set(weights) - set(versions))
        if unknown:
            raise BadRequest(f"model {name!r} has no version {unknown[0]!r}; its versions: {', '.join(versions)}")
        try:
            checked = {v: check_weight(name, v, weights.get(v, 0)) for v in versions}
        except BatcheryError as exc:
            raise BadRequest(str(exc)) from exc
        if not any(checked.values()):
            raise BadRequest("at least one version needs a weight above 0")
        return checked

    def _reload(self) -> None:
        """Read the file's weights again if it changed; keep those read before if it cannot be read."""
        if not self.models_file:
            return
        try:
            stat = os.stat(self.models_file)
        except OSError as exc:
            log.warning("could not stat the models file %s (%s); keeping its weights", self.models_file, exc)
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            found = read_weights(self.models_file)
        except BatcheryError as exc:
            log.warning("the models file %s does not read (%s); keeping its weights read before", self.models_file, exc)
            return
        if self._stamp is not None:
            log.info("the models file %s changed: weights %s", self.models_file, found)
        self._stamp = stamp
        self._file = {name: found.get(name) or self.registry.weights(name) for name in self.registry.names()}
