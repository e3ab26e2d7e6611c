"""Every Redis key batchery writes, named in one place with its lifetime beside it.

    batchery:job:<id>           hash    job state and counters             settings.job_ttl_s
    batchery:job:<id>:out       hash    index -> encoded output or error   settings.job_ttl_s
    batchery:job:<id>:done      list    one element pushed on completion   settings.job_ttl_s
    batchery:jobs               zset    job id -> created_at (recent jobs) trimmed to RECENT_JOBS
    batchery:worker:<hostname>  string  worker heartbeat (JSON)            settings.worker_heartbeat_ttl_s
    batchery:workers            set     hostnames that sent a heartbeat    members pruned when their key is gone
    batchery:cancellations      channel job ids, published on cancel      (pub/sub: nothing stored)
    batchery:idempotency:<sha>  string  Idempotency-Key -> first job id    settings.job_ttl_s
    batchery:dead-letters       list    items that exhausted their retries trimmed to DEAD_LETTERS_MAX
    batchery:job:<id>:owns      hash    index -> cache key it computes     settings.job_ttl_s
    batchery:cache:<key>        string  encoded output of a cached item    settings.cache_ttl_s
    batchery:cache:<key>:inflight string the input being computed        settings.job_ttl_s, deleted when done
    batchery:cache:<key>:waiters list   "<job id>|<index>" sharing it      settings.job_ttl_s, deleted when done
    batchery:cache-index        zset    cache key -> written at            trimmed to settings.cache_max_entries
    batchery:backlog:<model>    string  items sent to workers, not done    none (a counter)
    batchery:activity:<model>:<second>
                                hash    items stored, batches, batch fill  ACTIVITY_TTL_S

A cache key is ``<model>@<version>:<digest>`` (:func:`batchery.cache.cache_key`). The record script derives the
cache, in-flight and waiter keys from the cache key it finds in a job's ``owns`` hash, so those keys are not
declared to Redis up front: batchery runs on one Redis (or one hash slot), not a Redis Cluster.
"""

from __future__ import annotations

import hashlib

PREFIX = "batchery"
RECENT_JOBS = 1000
DEAD_LETTERS_MAX = 100_000
#: Activity buckets are read over the last minute at most; a bucket outlives that, then Redis drops it.
ACTIVITY_TTL_S = 120


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_outputs(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:out"


def job_done(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:done"


def recent_jobs() -> str:
    return f"{PREFIX}:jobs"


def worker(hostname: str) -> str:
    return f"{PREFIX}:worker:{hostname}"


def workers() -> str:
    return f"{PREFIX}:workers"


def cancellations() -> str:
    return f"{PREFIX}:cancellations"


def idempotency(client_key: str) -> str:
    """Hashed, so that a client's key (which may carry meaning to them) is never stored as given."""
    return f"{PREFIX}:idempotency:{hashlib.sha256(client_key.encode()).hexdigest()}"


def dead_letters() -> str:
    return f"{PREFIX}:dead-letters"


def job_owns(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:owns"


def cache_prefix() -> str:
    """What the Lua scripts put before a cache key (they build the entry, in-flight and waiter keys)."""
    return f"{PREFIX}:cache:"


def cache_entry(key: str) -> str:
    return f"{cache_prefix()}{key}"


def cache_index() -> str:
    return f"{PREFIX}:cache-index"


def backlog(model: str) -> str:
    return f"{PREFIX}:backlog:{model}"


def activity(model: str, second: int) -> str:
    """One model's counters for one wall-clock second (Unix time), summed over every worker."""
    return f"{PREFIX}:activity:{model}:{second}"
