"""The one settings object, built from ``BATCHERY_*`` environment variables.

Nothing else in the package reads the environment for configuration: code that needs a setting is handed
a :class:`Settings` (or calls :func:`get_settings`, which builds it once per process). What the environment
leaves unset of the Redis, broker and API URLs comes from a running `batchery up` (:mod:`batchery.stack`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from batchery import defaults, stack

if TYPE_CHECKING:
    from batchery.store import JobStore

PREFIX = "BATCHERY_"


@dataclass(frozen=True)
class Settings:
    """Each field is read from ``BATCHERY_<FIELD NAME IN CAPITALS>``; its doc is the README's table."""

    redis_url: str = defaults.REDIS_URL
    broker_url: str = ""
    host: str = defaults.HOST
    port: int = defaults.PORT
    flower_port: int = defaults.FLOWER_PORT
    flower_basic_auth: str = field(default="", repr=False)
    flower_url: str = ""
    public_url: str = ""
    api_url: str = ""
    models_file: str = ""
    data_dir: str = defaults.DATA_DIR
    chunk_size: int = defaults.CHUNK_SIZE
    chunks_in_flight_per_worker: int = defaults.CHUNKS_IN_FLIGHT_PER_WORKER
    max_items_per_job: int = defaults.MAX_ITEMS_PER_JOB
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    max_input_chars: int = defaults.MAX_INPUT_CHARS
    max_input_depth: int = defaults.MAX_INPUT_DEPTH
    max_metadata_bytes: int = defaults.MAX_METADATA_BYTES
    results_page_limit: int = defaults.RESULTS_PAGE_LIMIT
    results_page_max: int = defaults.RESULTS_PAGE_MAX
    results_wait_max_s: float = defaults.RESULTS_WAIT_MAX_S
    job_ttl_s: int = defaults.JOB_TTL_S
    files_url: str = defaults.FILES_URL
    max_file_bytes: int = defaults.MAX_FILE_BYTES
    file_ttl_s: int = defaults.FILE_TTL_S
    result_files_keep_s: int = defaults.RESULT_FILES_KEEP_S
    predict_timeout_s: float = defaults.PREDICT_TIMEOUT_S
    worker_concurrency: int = defaults.WORKER_CONCURRENCY
    worker_device: str = defaults.WORKER_DEVICE
    worker_heartbeat_s: float = defaults.WORKER_HEARTBEAT_S
    worker_heartbeat_ttl_s: float = defaults.WORKER_HEARTBEAT_TTL_S
    worker_devices: str = defaults.WORKER_DEVICES
    worker_processes: int = 0
    worker_prefix: str = ""
    worker_min_processes: int = 0
    worker_max_processes: int = 0
    worker_target_backlog_per_process: int = defaults.WORKER_TARGET_BACKLOG_PER_PROCESS
    worker_scale_up_cooldown_s: float = defaults.WORKER_SCALE_UP_COOLDOWN_S
    worker_scale_down_cooldown_s: float = defaults.WORKER_SCALE_DOWN_COOLDOWN_S
    worker_threads: int = 0
    worker_drain_timeout_s: float = defaults.WORKER_DRAIN_TIMEOUT_S
    visibility_timeout_s: int = defaults.VISIBILITY_TIMEOUT_S
    janitor_interval_s: float = defaults.JANITOR_INTERVAL_S
    janitor_grace_s: float = defaults.JANITOR_GRACE_S
    fault_transient_rate: float = 0.0
    fault_crash_rate: float = 0.0
    fault_oom_rate: float = 0.0
    fault_latency_rate: float = 0.0
    fault_latency_ms: float = 0.0
    fault_store_rate: float = 0.0
    fault_fatal_rate: float = 0.0
    fault_handoff_rate: float = 0.0
    retry_attempts: int = defaults.RETRY_ATTEMPTS
    retry_base_s: float = defaults.RETRY_BASE_S
    retry_max_s: float = defaults.RETRY_MAX_S
    oom_cooldown_s: float = defaults.OOM_COOLDOWN_S
    chunk_retry_attempts: int = defaults.CHUNK_RETRY_ATTEMPTS
    chunk_retry_base_s: float = defaults.CHUNK_RETRY_BASE_S
    chunk_retry_max_s: float = defaults.CHUNK_RETRY_MAX_S
    cache_enabled: bool = True
    cache_ttl_s: int = defaults.CACHE_TTL_S
    cache_max_entries: int = defaults.CACHE_MAX_ENTRIES
    max_queued_items: int = defaults.MAX_QUEUED_ITEMS
    retry_after_s: int = defaults.RETRY_AFTER_S
    accept_without_workers: bool = False
    api_workers: int = defaults.API_WORKERS
    api_threads: int = defaults.API_THREADS
    request_read_timeout_s: float = defaults.REQUEST_READ_TIMEOUT_S
    request_min_bytes_per_s: int = defaults.REQUEST_MIN_BYTES_PER_S
    worker_metrics_port: int = defaults.WORKER_METRICS_PORT
    task_events: bool = False
    log_format: str = defaults.LOG_FORMAT
    api_keys: str = field(default="", repr=False)
    api_keys_file: str = ""
    api_key: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    webhook_attempts: int = defaults.WEBHOOK_ATTEMPTS
    webhook_retry_base_s: float = defaults.WEBHOOK_RETRY_BASE_S
    webhook_retry_max_s: float = defaults.WEBHOOK_RETRY_MAX_S
    webhook_timeout_s: float = defaults.WEBHOOK_TIMEOUT_S
    canary_window_s: float = defaults.CANARY_WINDOW_S
    canary_min_items: int = defaults.CANARY_MIN_ITEMS
    canary_error_margin: float = defaults.CANARY_ERROR_MARGIN
    canary_latency_margin: float = defaults.CANARY_LATENCY_MARGIN
    canary_latency_min_ms: float = defaults.CANARY_LATENCY_MIN_MS
    canary_check_s: float = defaults.CANARY_CHECK_S
    trace_file: str = ""

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or defaults.LOCAL_REDIS_URL

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.effective_redis_url

    @property
    def api_key_list(self) -> tuple[str, ...]:
        """The keys the API accepts from ``api_keys`` (comma-separated); the keys file adds its own."""
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def api_keys_configured(self) -> bool:
        return bool(self.api_key_list or self.api_keys_file)

    @property
    def client_api_key(self) -> str:
        """The key a client command sends: ``api_key``, else the first key the API accepts (one machine)."""
        return self.api_key or next(iter(self.api_key_list), "")

    @property
    def client_url(self) -> str:
        """Where a client command finds the API: ``api_url``, else this machine's ``host:port``."""
        return (self.api_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def effective_files_url(self) -> str:
        """Where files' bytes live: ``files_url``, else the folder ``files`` under the data dir."""
        return self.files_url or str(self.data_path / "files")

    def job_store(self) -> "JobStore":
        """The job store on this configuration's Redis, with its TTLs and cache bounds."""
        from batchery.store import JobStore

        return JobStore.from_url(self.effective_redis_url, self.job_ttl_s, self.cache_ttl_s, self.cache_max_entries)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, raw, type(f.default))
        return cls(**values)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """:meth:`from_env`, with the Redis, broker and API URLs it leaves unset taken from the `batchery up`
        running on this machine with the same data dir, if one is: so that a command in another shell (or
        ``celery -A batchery.workers``) reaches the stack it started, an embedded Redis on a random port included."""
        settings = cls.from_env(environ)
        running = stack.read(settings.data_path)
        if running is None or settings.redis_url not in ("", running.redis_url):
            return settings
        return dataclasses.replace(
            settings, redis_url=running.redis_url, broker_url=settings.broker_url or running.broker_url,
            api_url=settings.api_url or running.api_url,
        )

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for the child processes that `batchery up` starts."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _convert(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r}: expected {kind.__name__}") from exc


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment (and a running stack's state file) once."""
    return Settings.load()
