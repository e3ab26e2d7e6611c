"""Model specs and the registry that the API and the workers share."""

from batchery.models.registry import BUILTINS, ModelSpec, Registry, load_registry

__all__ = ["BUILTINS", "ModelSpec", "Registry", "load_registry"]
