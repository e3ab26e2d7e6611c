"""Every Redis key batchery writes, named in one place with its lifetime beside it.

    batchery:job:<id>                 hash    job state and counters              until the job's expires_at
    batchery:job:<id>:out:<shard>     hash    index -> encoded output or error    until the job's expires_at
    batchery:job:<id>:owns:<shard>    hash    index -> cache key it computes      until the job's expires_at
    batchery:job:<id>:done            list    one element pushed on completion    until the job's expires_at
    batchery:job:<id>:chunk:<n>       hash    one chunk: indices, inputs, queue   deleted when the chunk is done
    batchery:jobs                     zset    job id -> created_at (recent jobs)  trimmed to RECENT_JOBS
    batchery:queued:<queue>           zset    "<job id>:<n>" -> sent at           member removed when a worker takes it
    batchery:running:<queue>          set     "<job id>:<n>" taken by a worker    member removed when the chunk is done
    batchery:lane:<queue>             list    job ids with chunks held back       job removed with its last held chunk
    batchery:job:<id>:held            list    chunk numbers not sent yet          until the job's expires_at
    batchery:holding:<hostname>       set     "<job id>:<n>" the worker runs      member removed when the chunk is done
    batchery:holders                  set     hostnames with a holding set        member removed once swept
    batchery:worker:<hostname>        string  worker heartbeat (JSON)             settings.worker_heartbeat_ttl_s
    batchery:workers                  set     hostnames that sent a heartbeat     members pruned when their key is gone
    batchery:pool:<name>              string  a worker pool's size (JSON)         POOL_TTL_S, refreshed every second
    batchery:pools                    set     pools that published their size     members pruned when their key is gone
    batchery:cancellations            channel job ids, published on cancel       (pub/sub: nothing stored)
    batchery:idempotency:<sha>        string  Idempotency-Key -> first job id     IDEMPOTENCY_PENDING_S, then the job TTL
    batchery:tenant:<name>:recent     zset    an API key's job ids -> created_at  trimmed to RECENT_JOBS; the job TTL
    batchery:tenant:<name>:minute     hash    second -> items submitted in it     QUOTA_WINDOW_S, older seconds dropped
    batchery:tenant:<name>:active     zset    job id -> when counted in           the job TTL (ended jobs counted out)
    batchery:tenant:<name>:items      hash    job id -> its items, while active   the job TTL (ended jobs counted out)
    batchery:tenant:<name>:in-flight  string  items of the active jobs            the job TTL (a counter, swept)
    batchery:tenant:<name>:swept      string  a full sweep of the active jobs ran QUOTA_SWEEP_EVERY_MS
    batchery:dead-letters             list    items that exhausted their retries  trimmed to DEAD_LETTERS_MAX
    batchery:webhooks:watch           zset    job id -> when to look if it ended  member moved to :due when it ends
    batchery:webhooks:due             zset    job id -> when to call its webhook  member removed once delivered or given up
    batchery:results:watch            zset    job id -> when to look if it ended  member moved to :due when it ends
    batchery:results:due              zset    job id -> when to write its files   member removed once they are written
    batchery:job:<id>:finalizing      string  who writes the job's result files   FINALIZE_LEASE_S, renewed while writing
    batchery:cache:<key>              string  encoded output of a cached item     settings.cache_ttl_s
    batchery:cache:<key>:inflight     string  "<job id>|<index>\\n<input JSON>"   settings.job_ttl_s, deleted when done
    batchery:cache:<key>:waiters      list    "<job id>|<index>" sharing it       settings.job_ttl_s, deleted when done
    batchery:cache-index:<0-f>        zset    cache key -> written at             trimmed to cache_max_entries / 16
    batchery:handoff                  list    ids of handoffs not yet finished    entries removed when finished
    batchery:handoff:<n>              hash    a result to share, or items to run  deleted when finished
    batchery:handoff:<n>:waiters      list    the handoff's "<job id>|<index>"    deleted when finished
    batchery:backlog:<model>          string  items sent to workers, not done     none (a counter; reconciled when idle)
    batchery:backlog:<model>:at       string  when items were last counted in     BACKLOG_QUIET_S
    batchery:janitor:<task>           string  which worker sweeps now             the sweep's lease
    batchery:weights:<model>          hash    version -> weight, over the file's  none (deleted to go back to the file)
    batchery:rollbacks:<model>        hash    version -> its last rollback (JSON) none (a few small fields per model)
    batchery:activity:<model>:<second>
                                      hash    items stored, batches, batch fill   ACTIVITY_TTL_S
    batchery:file:<id>                hash    a file's record (its bytes: a blob) until swept, settings.file_ttl_s after creation
    batchery:files                    zset    file id -> created_at               member removed with its record
    batchery:files:expiry             zset    file id -> expires_at               member removed with its record
    batchery:tenant:<name>:files      zset    an API key's file ids -> created_at member removed with its record
    batchery:files:sweep              string  one API process sweeps expired files FILE_SWEEP_EVERY_S
    batchery:batch:<id>               hash    an OpenAI-style batch: its job, files, settings.job_ttl_s
                                              request counts and line errors
    batchery:batches                  zset    batch id -> created_at              member pruned once its record is gone
    batchery:tenant:<name>:batches    zset    an API key's batch ids -> created_at member pruned once its record is gone
    batchery:batch:<id>:finalizing    string  who writes the batch's files now    FINALIZE_LEASE_S, renewed while writing

Bounds: a job's outputs and cache claims are split into shards of SHARD_ITEMS items, so no key grows with the
size of a job; a chunk holds at most its model's ``chunk_size`` items (``settings.chunk_size`` unless the model sets
one); the cache index is split in 16.

A cache key is ``<model>@<version>:<digest>`` (:func:`batchery.cache.cache_key`). The Lua scripts derive job,
shard, cache, in-flight and waiter keys from the ids they are given, so those keys are not declared to Redis
up front: batchery runs on one Redis (or one hash slot), not a Redis Cluster.
"""

from __future__ import annotations

import hashlib

PREFIX = "batchery"
RECENT_JOBS = 1000
DEAD_LETTERS_MAX = 100_000
#: Items per shard of a job's outputs and claims: 4,096 MiniLM vectors are 6 MB, 4,096 inputs of the
#: longest text allowed (10,000 characters) echoed back some 40 MB: under 64 MB either way.
SHARD_ITEMS = 4096
#: The cache index is split by the last hex digit of the key's digest.
CACHE_INDEX_SHARDS = 16
#: An Idempotency-Key is held this long while its job is being accepted; then for the job TTL.
IDEMPOTENCY_PENDING_S = 60
#: An API key's items per minute are counted per second over this window.
QUOTA_WINDOW_S = 60
#: A job counted in flight whose record never appeared (its submission died) is counted out after this long.
QUOTA_PENDING_S = 60
#: Each submission with an in-flight quota checks this many of the key's oldest active jobs for their end ...
QUOTA_SWEEP_OLDEST = 8
#: ... and, when it would be refused, all of them, at most once per this many milliseconds per key.
QUOTA_SWEEP_EVERY_MS = 1000
#: A worker pool's published size outlives its last refresh by this long, then Redis drops it.
POOL_TTL_S = 10
#: A backlog counter is reconciled only when nothing was counted into it for this long.
BACKLOG_QUIET_S = 60
#: Activity buckets are read over the last minute at most; a bucket outlives that, then Redis drops it.
ACTIVITY_TTL_S = 120
#: Expired files are looked for at most this often (by whichever API process takes the sweep's lease).
FILE_SWEEP_EVERY_S = 60
#: A process writing a batch's output files or a job's result files holds this lease, renewed as it writes; one
#: that dies lets it lapse.
FINALIZE_LEASE_S = 30


def shard(index: int) -> int:
    return index // SHARD_ITEMS


def job_prefix() -> str:
    """What the Lua scripts put before a job id (they build the job's other keys from it)."""
    return f"{PREFIX}:job:"


def job(job_id: str) -> str:
    return f"{job_prefix()}{job_id}"


def job_outputs(job_id: str, shard_number: int) -> str:
    return f"{job(job_id)}:out:{shard_number}"


def job_owns(job_id: str, shard_number: int) -> str:
    return f"{job(job_id)}:owns:{shard_number}"


def job_done(job_id: str) -> str:
    return f"{job(job_id)}:done"


def chunk(job_id: str, number: int) -> str:
    return f"{job(job_id)}:chunk:{number}"


def chunk_ref(job_id: str, number: int) -> str:
    """How a chunk is named in the queued and holding sets."""
    return f"{job_id}:{number}"


def parse_chunk_ref(ref: str) -> tuple[str, int]:
    job_id, _, number = ref.rpartition(":")
    return job_id, int(number)


def queued(queue: str) -> str:
    return f"{PREFIX}:queued:{queue}"


def running(queue: str) -> str:
    return f"{PREFIX}:running:{queue}"


def lane(queue: str) -> str:
    """The ring of jobs whose chunks wait to be released into ``queue``, served round-robin."""
    return f"{PREFIX}:lane:{queue}"


def job_held(job_id: str) -> str:
    return f"{job(job_id)}:held"


def holding(hostname: str) -> str:
    return f"{PREFIX}:holding:{hostname}"


def holders() -> str:
    return f"{PREFIX}:holders"


def recent_jobs() -> str:
    return f"{PREFIX}:jobs"


def worker(hostname: str) -> str:
    return f"{PREFIX}:worker:{hostname}"


def workers() -> str:
    return f"{PREFIX}:workers"


def pool(name: str) -> str:
    return f"{PREFIX}:pool:{name}"


def pools() -> str:
    return f"{PREFIX}:pools"


def cancellations() -> str:
    return f"{PREFIX}:cancellations"


def idempotency(client_key: str, scope: str = "") -> str:
    """Hashed, so that a client's key (which may carry meaning to them) is never stored as given; with a
    ``scope`` (the API key's name), the same client key of another API key is another Redis key."""
    scoped = f"{scope}\n{client_key}" if scope else client_key
    return f"{PREFIX}:idempotency:{hashlib.sha256(scoped.encode()).hexdigest()}"


def tenant(name: str) -> str:
    """What all of an API key's own keys start with (a key's name: letters, digits, ``.``, ``_``, ``-``)."""
    return f"{PREFIX}:tenant:{name}"


def tenant_recent(name: str) -> str:
    return f"{tenant(name)}:recent"


def tenant_minute(name: str) -> str:
    return f"{tenant(name)}:minute"


def tenant_active(name: str) -> str:
    return f"{tenant(name)}:active"


def tenant_items(name: str) -> str:
    return f"{tenant(name)}:items"


def tenant_in_flight(name: str) -> str:
    return f"{tenant(name)}:in-flight"


def tenant_swept(name: str) -> str:
    return f"{tenant(name)}:swept"


def dead_letters() -> str:
    return f"{PREFIX}:dead-letters"


def webhooks_watch() -> str:
    """Jobs with a webhook whose end has not been seen yet."""
    return f"{PREFIX}:webhooks:watch"


def webhooks_due() -> str:
    """Ended jobs whose webhook is still to be called (again)."""
    return f"{PREFIX}:webhooks:due"


def results_watch() -> str:
    """Jobs that asked for result files and whose end has not been seen yet."""
    return f"{PREFIX}:results:watch"


def results_due() -> str:
    """Ended jobs whose result files are still to be written."""
    return f"{PREFIX}:results:due"


def job_finalizing(job_id: str) -> str:
    return f"{job(job_id)}:finalizing"


def cache_prefix() -> str:
    """What the Lua scripts put before a cache key (they build the entry, in-flight and waiter keys)."""
    return f"{PREFIX}:cache:"


def cache_entry(key: str) -> str:
    return f"{cache_prefix()}{key}"


def cache_inflight(key: str) -> str:
    return f"{cache_entry(key)}:inflight"


def cache_waiters(key: str) -> str:
    return f"{cache_entry(key)}:waiters"


def cache_index_prefix() -> str:
    return f"{PREFIX}:cache-index:"


def cache_index(digit: str) -> str:
    """The index shard of cache keys whose digest ends in hex ``digit``."""
    return f"{cache_index_prefix()}{digit}"


def handoffs() -> str:
    return f"{PREFIX}:handoff"


def handoff(number: int | str) -> str:
    return f"{PREFIX}:handoff:{number}"


def handoff_waiters(number: int | str) -> str:
    return f"{handoff(number)}:waiters"


def backlog_prefix() -> str:
    return f"{PREFIX}:backlog:"


def backlog(model: str) -> str:
    return f"{backlog_prefix()}{model}"


def backlog_at(model: str) -> str:
    return f"{backlog(model)}:at"


def weights(model: str) -> str:
    """A model's weights as an admin or a rollback set them, overriding the models file's."""
    return f"{PREFIX}:weights:{model}"


def rollbacks(model: str) -> str:
    return f"{PREFIX}:rollbacks:{model}"


def janitor(task: str) -> str:
    return f"{PREFIX}:janitor:{task}"


def activity(model: str, second: int) -> str:
    """One model's counters for one wall-clock second (Unix time), summed over every worker."""
    return f"{PREFIX}:activity:{model}:{second}"


def file(file_id: str) -> str:
    return f"{PREFIX}:file:{file_id}"


def files() -> str:
    return f"{PREFIX}:files"


def files_expiry() -> str:
    return f"{PREFIX}:files:expiry"


def files_sweep() -> str:
    return f"{PREFIX}:files:sweep"


def tenant_files(name: str) -> str:
    return f"{tenant(name)}:files"


def batch(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def batches() -> str:
    return f"{PREFIX}:batches"


def tenant_batches(name: str) -> str:
    return f"{tenant(name)}:batches"


def batch_finalizing(batch_id: str) -> str:
    return f"{batch(batch_id)}:finalizing"
