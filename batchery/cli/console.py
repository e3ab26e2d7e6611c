"""What the `batchery` command says to a person: errors in one line, its banner, its checks before starting.

Every error a command meets ends it with one line on stderr (``Error: ...``) and exit code 1, never a
traceback: a wrong setting, a Redis that does not answer or a port that is taken are the operator's to fix,
and a traceback hides the one line that says how.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import sys
from typing import Any

import click
import redis
import requests
from kombu.exceptions import OperationalError

from batchery.cli.processes import is_loopback
from batchery.errors import BatcheryError
from batchery.monitoring.logs import redact
from batchery.redis_urls import masked
from batchery.settings import Settings

log = logging.getLogger("batchery")


class Commands(click.Group):
    """A click group whose commands fail in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.debug("the command failed", exc_info=True)
            raise click.ClickException(one_line(exc)) from exc


def one_line(exc: BaseException) -> str:
    """What went wrong, on one line, with any password in a URL masked."""
    if isinstance(exc, BatcheryError):
        text = exc.message
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        text = f"Redis does not answer ({exc}): is `batchery up` running, or BATCHERY_REDIS_URL set to your Redis?"
    elif isinstance(exc, OperationalError):
        text = f"the broker does not answer ({exc}): is BATCHERY_BROKER_URL (or BATCHERY_REDIS_URL) right?"
    elif isinstance(exc, requests.ConnectionError):
        text = f"the API does not answer: {exc}"
    elif isinstance(exc, ValueError | OSError | RuntimeError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))


def for_a_person(settings: Settings, environ: dict[str, str] | os._Environ = os.environ) -> Settings:
    """Text logs when standard output is a terminal and nobody chose a format: JSON stays the default for
    services, whose logs go to a collector, not to someone's eyes."""
    if "BATCHERY_LOG_FORMAT" in environ or not sys.stdout.isatty():
        return settings
    return dataclasses.replace(settings, log_format="text")


def check_port(host: str, port: int, what: str, fix: str) -> None:
    """Refuse to start anything when ``port`` is taken on ``host``: said up front, rather than found in the log
    of a child that died after Redis and the workers were started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            why = "is taken" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise click.ClickException(f"port {port} on {host} {why}: the {what} cannot listen there; {fix}")


def client_host(host: str) -> str:
    """The address a client on this machine uses for a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host


def banner(settings: Settings, flower: bool = True, workers: list[str] | None = None, embedded: bool = False) -> str:
    """What `batchery up` prints once its workers are warm: where everything is, passwords in URLs masked."""
    url = f"http://{client_host(settings.host)}:{settings.port}"
    names = workers or []
    redis_note = " (embedded)" if embedded else ""
    lines = [
        f"batchery is up: {len(names)} worker process{'es' if len(names) != 1 else ''} warm ({', '.join(names)})",
        f"  jobs    {url}/   API {url}/v1   OpenAPI {url}/openapi.json   metrics {url}/metrics{worker_ports(settings, len(names))}",
        f"  Redis   {masked(settings.effective_redis_url)}{redis_note}"
        + (f"   broker {masked(settings.broker_url)}" if settings.broker_url else ""),
    ]
    if flower:
        lines.append(f"  Flower  http://{client_host(settings.host)}:{settings.flower_port}/{flower_note(settings)}")
    if settings.api_keys_configured:
        lines.append("  API keys are required: send 'Authorization: Bearer <key>'")
    lines.append("Ctrl-C stops everything; `batchery` commands in other shells find this stack by themselves.")
    return "\n".join(lines)


def worker_ports(settings: Settings, workers: int) -> str:
    first = settings.worker_metrics_port
    if not first or not workers:
        return ""
    return f" (workers' :{first})" if workers == 1 else f" (workers' :{first}-{first + workers - 1})"


def flower_note(settings: Settings) -> str:
    if settings.flower_basic_auth:
        return " (basic auth)"
    return " (its API open on this machine only)" if is_loopback(settings.host) else " (its API off: no auth)"
