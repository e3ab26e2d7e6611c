"""Recovery: putting work that a crash, a restart or a lost message left behind back in motion."""

from batchery.recovery.janitor import Janitor

__all__ = ["Janitor"]
