"""One log line per request, stamped with the job it is about and the name of the API key that sent it
(gunicorn's own access log is off). The key itself is never logged."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from batchery.monitoring.logs import bind

log = logging.getLogger("batchery.api")
#: Probes, scrapes and the jobs page's polling arrive every second or few; their lines are debug-level so they
#: do not drown the rest.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/readyz/api", "/metrics", "/v1/overview"})


def register_request_log(app: Flask) -> None:
    @app.before_request
    def bind_request() -> None:
        g.request_started = time.perf_counter()
        bind((request.view_args or {}).get("job_id"))

    @app.after_request
    def log_request(response: Response) -> Response:
        duration_ms = round((time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000, 2)
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": duration_ms,
        }
        message, args = "%s %s %d %.1fms", [request.method, request.path, response.status_code, duration_ms]
        tenant = g.get("tenant")
        if tenant is not None:
            fields["key_name"] = tenant.name
            message, args = message + " key %s", [*args, tenant.name]
        log.log(level, message, *args, extra=fields)
        return response

    @app.teardown_request
    def unbind_request(exc: BaseException | None) -> None:
        bind(None, None)
