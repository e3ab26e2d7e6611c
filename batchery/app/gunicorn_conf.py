"""gunicorn settings only code can give (``--config=python:batchery.app.gunicorn_conf``, set by `batchery api`).

Logging: batchery's JSON (or text) lines for gunicorn's own log and the app's. Metrics: a gunicorn process
that exits must be marked dead, so that prometheus-client's multiprocess mode stops counting its live gauges.
Errors: what gunicorn refuses before the app sees it is answered with the app's JSON error document.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn import util

from batchery.app.errors import INTERNAL, code_of, error_body
from batchery.monitoring.logs import dict_config
from batchery.settings import get_settings

logconfig_dict = dict_config(get_settings())


def post_fork(server: Any, worker: Any) -> None:
    """In each worker process, gunicorn's own error answers (414 for a request line over its limit, 400 for a
    duplicate Host header or a malformed request, 431 for headers too large) become JSON like the app's.

    gunicorn writes them all through ``util.write_error`` and offers no hook for it; swapping that one function
    keeps gunicorn's choice of status, its log line and its access log.
    """
    util.write_error = write_json_error


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s answer, as ``{"error": {"code", "message"}}`` instead of an HTML page."""
    if status_int == 500:
        body = error_body("internal", INTERNAL)
    else:
        body = error_body(code_of(reason), mesg or reason)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
