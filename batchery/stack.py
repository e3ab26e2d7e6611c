"""The running stack's state file: where a `batchery up` on this machine serves, for commands in other shells.

`batchery up` may start a Redis of its own on a random port, and may serve the API on a port given on its
command line; neither is in the environment of another shell. So while it serves it keeps
``<data dir>/up.json`` (readable by its user alone: a Redis URL may hold a password) with its pid, the Redis
URL, the broker URL and the API's URL, and removes it when it stops. :meth:`batchery.settings.Settings.load`
reads it for what the environment leaves unset, so ``batchery dlq list``, ``batchery submit`` and
``celery -A batchery.workers inspect ...`` find the stack with nothing copied by hand. A file whose pid is no
longer running is stale (a `batchery up` that was killed) and is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "up.json"


@dataclass(frozen=True)
class Stack:
    """What a running `batchery up` serves; ``broker_url`` is empty when it is the Redis URL."""

    pid: int
    redis_url: str
    api_url: str
    broker_url: str = ""


def state_path(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / FILE_NAME


def write(data_dir: str | Path, stack: Stack) -> Path:
    """Write the state file atomically, mode 0600."""
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        json.dump(asdict(stack), f)
    os.replace(partial, path)
    return path


def read(data_dir: str | Path) -> Stack | None:
    """The stack serving from ``data_dir``, or None: no file, a file that does not read, or a stale one."""
    try:
        found = Stack(**json.loads(state_path(data_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return found if alive(found.pid) else None


def remove(data_dir: str | Path, pid: int) -> None:
    """Remove the state file if it is ``pid``'s (another `batchery up` may have written it since)."""
    path = state_path(data_dir)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
