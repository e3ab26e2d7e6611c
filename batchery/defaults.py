"""Every default in one place, read by :mod:`batchery.settings`. Units are in the names."""

REDIS_URL = ""  # empty: `batchery up` finds or starts one; everything else uses LOCAL_REDIS_URL
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
HOST = "127.0.0.1"
PORT = 8000
FLOWER_PORT = 5555
DATA_DIR = "~/.local/share/batchery"

CHUNK_SIZE = 256
CHUNKS_IN_FLIGHT_PER_WORKER = 2  # a lane's chunks sent and not done, per live worker; the rest wait in Redis
MAX_ITEMS_PER_JOB = 1_000_000
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_INPUT_CHARS = 10_000
MAX_METADATA_BYTES = 16 * 1024  # a job's metadata, as compact JSON: it is read back with every status poll
MAX_INPUT_DEPTH = 32  # lists and objects inside one another, in an input or the metadata; orjson writes 254 at most
RESULTS_PAGE_LIMIT = 1000
RESULTS_PAGE_MAX = 10_000
RESULTS_WAIT_MAX_S = 60.0  # the longest ?wait= a results read may ask for: each waiting reader holds an API thread

JOB_TTL_S = 7 * 24 * 3600
FILES_URL = ""  # empty: the folder files/ under the data dir; else any fsspec URL (s3://bucket/prefix, ...)
MAX_FILE_BYTES = 200 * 1024 * 1024  # one uploaded file (POST /v1/files), as OpenAI's batch input files
FILE_TTL_S = 30 * 24 * 3600  # uploaded files and the files batches write, as OpenAI keeps batch files
RESULT_FILES_KEEP_S = 300  # a job's outputs stay in Redis this long once its result files are written
PREDICT_TIMEOUT_S = 30.0

WORKER_CONCURRENCY = 8
WORKER_DEVICE = "cpu"
WORKER_HEARTBEAT_S = 2.0
WORKER_HEARTBEAT_TTL_S = 10.0
WORKER_DEVICES = "auto"  # auto | cpu | 0,1,... (GPU indices as nvidia-smi numbers them)
WORKER_DRAIN_TIMEOUT_S = 60.0
WARMING_STOP_S = 3.0  # a worker still warming up holds no chunk: on Ctrl-C it is killed after this
RESTART_BACKOFF_MIN_S = 1.0  # a worker that dies is restarted after this, doubling while it keeps dying
RESTART_BACKOFF_MAX_S = 30.0
RESTART_STABLE_S = 60.0  # a worker that lived this long has its back-off reset
WORKER_TARGET_BACKLOG_PER_PROCESS = 1024  # a scaling CPU pool adds processes past this many items each
WORKER_SCALE_UP_COOLDOWN_S = 10.0  # a scaling CPU pool grows at most once per this long
WORKER_SCALE_DOWN_COOLDOWN_S = 60.0  # ... and shrinks only after its backlog stayed low this long
SCALE_DOWN_FILL = 0.5  # ... low: the smaller pool would hold at most this share of its target backlog
SCALE_INTERVAL_S = 1.0  # how often a pool reads its backlog and publishes its size
VISIBILITY_TIMEOUT_S = 600
JANITOR_INTERVAL_S = 2.0  # how often each worker's janitor sweeps (handoffs, dead workers' chunks, lost chunks)
JANITOR_GRACE_S = 30.0  # a chunk sent this long ago and neither queued nor taken is lost
CELERY_RESULT_EXPIRES_S = 3600

API_WORKERS = 2
API_THREADS = 32  # a thread per request being read or answered: slow clients hold theirs until the read timeout
REQUEST_READ_TIMEOUT_S = 10.0  # a request's headers and body must arrive within this (plus the allowance below)
REQUEST_MIN_BYTES_PER_S = 64 * 1024  # each such many bytes received add a second, so a large body has time to come

WORKER_METRICS_PORT = 9100  # each worker process serves its own /metrics: pool slot N on this port + N; 0 = off
LOG_FORMAT = "json"  # json | text

RETRY_ATTEMPTS = 3
RETRY_BASE_S = 0.05
RETRY_MAX_S = 2.0
OOM_COOLDOWN_S = 30.0
CHUNK_RETRY_ATTEMPTS = 8  # 1 + 2 + 4 + ... capped at 60: some three minutes of Redis outage
CHUNK_RETRY_BASE_S = 1.0
CHUNK_RETRY_MAX_S = 60.0

CACHE_TTL_S = 24 * 3600
CACHE_MAX_ENTRIES = 1_000_000
MAX_QUEUED_ITEMS = 2_000_000
RETRY_AFTER_S = 5

WEBHOOK_ATTEMPTS = 8  # calls of a job's webhook before it is given up: 1 + 2 + 4 + ... s apart, capped below
WEBHOOK_RETRY_BASE_S = 1.0
WEBHOOK_RETRY_MAX_S = 300.0
WEBHOOK_TIMEOUT_S = 10.0  # one call, connecting and answering

CANARY_WINDOW_S = 60.0  # a canary is judged on its items of the last this many seconds (at most ACTIVITY_TTL_S - 10)
CANARY_MIN_ITEMS = 100  # ... once it and its primary each have this many in the window
CANARY_ERROR_MARGIN = 0.05  # rolled back when its error rate passes the primary's by this much (0.05: 5 points)
CANARY_LATENCY_MARGIN = 0.5  # ... or its p95 latency passes the primary's by this fraction (0.5: 1.5 times)
CANARY_LATENCY_MIN_MS = 25.0  # ... and by at least this much: a few ms of batching wait is no regression
CANARY_CHECK_S = 5.0  # how often each worker's canary watcher looks
