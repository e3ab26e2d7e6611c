"""`batchery worker-check`: whether this machine's worker is alive, told by its heartbeat in Redis.

Made for a container's liveness probe (a Kubernetes ``exec`` probe): a worker beats every
``BATCHERY_WORKER_HEARTBEAT_S`` into a key that lives ``BATCHERY_WORKER_HEARTBEAT_TTL_S``, from a thread that
runs only once its models are warm, so a key that is there is a beat that is fresh. A worker that is draining
or whose batcher died still beats (as not ready) and exits by itself, so it passes: the probe is there for the
worker that stopped beating, wedged or gone, which nothing else would restart. A Redis that does not answer
passes too, said on stderr: restarting every worker would not bring Redis back, and the workers outlive its
restarts (see the README's "Nothing lost, nothing wedged").
"""

from __future__ import annotations

import socket

import redis

from batchery.redis_urls import redis_client
from batchery.store.heartbeats import of_host

#: A probe must answer within its own timeout, so Redis gets this long to connect and to answer.
REDIS_TIMEOUT_S = 3.0


def check(url: str, name: str | None = None, host: str | None = None) -> tuple[bool, bool, str]:
    """(passed, seen, what to say) for the worker ``name`` on ``host`` (this machine), or any worker there;
    ``seen`` is whether Redis was read at all."""
    host = host or socket.gethostname()
    who = f"{name}@{host}" if name else f"any worker @{host}"
    client = redis_client(url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
    try:
        beats = of_host(client, host, name)
    except redis.RedisError as exc:
        return True, False, f"Redis does not answer ({exc}): cannot tell, and restarting {who} would not help"
    finally:
        client.close()
    if not beats:
        return False, True, f"no live heartbeat of {who} in Redis: it is warming up, wedged or gone"
    states = (
        f"{h} {'ready' if b.get('ready', True) else 'not ready (draining or stopping)'}" for h, b in beats.items()
    )
    return True, True, "; ".join(states)
