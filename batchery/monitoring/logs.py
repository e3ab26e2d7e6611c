"""Structured logs: one JSON object per line, stamped with the job and Celery task a line is about.

The ids travel in context variables, bound per HTTP request by the API and per chunk task by the worker
(Celery's ``task_prerun``/``task_postrun`` signals), and a filter on the handler stamps every record with
them. Celery logs a task's receipt from its consumer thread, outside any task; those records carry the task
id in their arguments, and a chunk's task id starts with its job id (``<job id>.<first index>``).

Secrets never reach a log line: passwords in URLs, ``password=``/``token=``-style pairs and the configured
secret values are masked in every message and traceback.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from batchery.errors import ConfigError
from batchery.settings import Settings, get_settings

JOB_ID: ContextVar[str | None] = ContextVar("batchery_job_id", default=None)
TASK_ID: ContextVar[str | None] = ContextVar("batchery_task_id", default=None)
FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s"
#: Record attributes a caller may pass with ``extra=`` that become fields of the JSON line.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "key_name", "model", "items")
MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_SECRET_PAIR = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|api[_-]?key|authorization|basic[_-]?auth)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic)\s+)?[^\s\"'&,;]+",
    re.IGNORECASE,
)


def bind(job_id: str | None = None, task_id: str | None = None) -> None:
    """The job and task the current request or task is about (None for neither)."""
    JOB_ID.set(job_id)
    TASK_ID.set(task_id)


class JobContext(logging.Filter):
    """Stamps each record with ``job_id`` and ``task_id`` (None when the line is about no job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = getattr(record, "task_id", None) or TASK_ID.get() or _celery_task_id(record)
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id is None and task_id is not None:
            job_id = task_id.split(".", 1)[0]
        record.job_id, record.task_id = job_id, task_id
        return True


def _celery_task_id(record: logging.LogRecord) -> str | None:
    """Celery's worker logs each task's receipt and outcome with a mapping of its fields, id among them."""
    args = record.args
    if isinstance(args, Mapping) and record.name.startswith("celery"):
        task_id = args.get("id")
        return str(task_id) if task_id else None
    return None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _SECRET_PAIR.sub(rf"\g<head>{MASK}", text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "pid", "job_id"?, "task_id"?, "exception"?, ...}`` per line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), self.secrets),
            "pid": record.process,
        }
        for name in ("job_id", "task_id", *EXTRA_FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), self.secrets)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One readable line, with the job and task ids of a line about a job (and no empty ones on the others),
    secrets masked alike."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        job_id, task_id = getattr(record, "job_id", None), getattr(record, "task_id", None)
        ids = [f"job={job_id}"] * bool(job_id) + [f"task={task_id}"] * bool(task_id)
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return redact(super().format(record), self.secrets)


def make_formatter(log_format: str, secrets: Iterable[str] = ()) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ConfigError(f"BATCHERY_LOG_FORMAT={log_format!r}: expected one of {', '.join(FORMATS)}")
    return JsonFormatter(secrets) if log_format == "json" else TextFormatter(secrets)


def secrets_of(settings: Settings) -> list[str]:
    """Values from the settings that must never be printed: URL passwords and Flower's credentials."""
    found = [urlsplit(url).password or "" for url in (settings.redis_url, settings.broker_url)]
    found += [pair.partition(":")[2] for pair in settings.flower_basic_auth.split(",")]
    return [s for s in found if s]


def handler_for(settings: Settings, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(settings.log_format, secrets_of(settings)))
    handler.addFilter(JobContext())
    return handler


def configure(settings: Settings, level: int = logging.INFO) -> None:
    """The root logger of a batchery command writes one formatted line per record to stderr."""
    root = logging.getLogger()
    root.handlers = [handler_for(settings)]
    root.setLevel(level)


def dict_config(settings: Settings) -> dict[str, Any]:
    """The same, as :func:`logging.config.dictConfig` takes it (gunicorn's ``logconfig_dict``).

    gunicorn's access log is silenced: the API logs each request itself, with the job it is about.
    """
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "batchery",
        "filters": ["job"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": JobContext}},
        "formatters": {
            "batchery": {"()": make_formatter, "log_format": settings.log_format, "secrets": secrets_of(settings)}
        },
        "handlers": {"console": handler},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def use_for_celery(logger: logging.Logger, **kwargs: Any) -> None:
    """Celery built the worker's handlers (``--logfile``, ``--loglevel``); give them batchery's format and ids."""
    settings = get_settings()
    for handler in logger.handlers:
        handler.setFormatter(make_formatter(settings.log_format, secrets_of(settings)))
        handler.addFilter(JobContext())


def bind_task(task_id: str | None = None, kwargs: Mapping[str, Any] | None = None, **_: Any) -> None:
    bind((kwargs or {}).get("job_id"), task_id)


def unbind_task(**_: Any) -> None:
    bind(None, None)


def connect_celery_signals() -> None:
    """Format the worker's logs and bind each chunk task's ids (connected once, however often called)."""
    from celery import signals

    signals.after_setup_logger.connect(use_for_celery, weak=False, dispatch_uid="batchery-logs-root")
    signals.after_setup_task_logger.connect(use_for_celery, weak=False, dispatch_uid="batchery-logs-task")
    signals.task_prerun.connect(bind_task, weak=False, dispatch_uid="batchery-logs-prerun")
    signals.task_postrun.connect(unbind_task, weak=False, dispatch_uid="batchery-logs-postrun")
