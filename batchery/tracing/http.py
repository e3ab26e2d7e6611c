"""A server span per API request, continuing the caller's trace when it sent a ``traceparent``.

Probes, scrapes and the jobs page's polling (``QUIET_PATHS``, the ones the request log keeps at debug level)
get none: they arrive every second and say nothing about any job. Off, nothing is registered on the app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request

from batchery.tracing import setup

#: Paths polled every second or few: no span for them.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/overview"})


def instrument_app(app: Flask) -> None:
    """Register the request span on ``app``, when tracing is on."""
    if not setup.active():
        return
    app.before_request(_start)
    app.after_request(_status)
    app.teardown_request(_end)


def _start() -> None:
    tracer = setup.tracer()
    if tracer is None or request.path in QUIET_PATHS:
        return
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind

    rule = request.url_rule.rule if request.url_rule is not None else None
    attributes = {"http.request.method": request.method, "url.path": request.path}
    if rule is not None:
        attributes["http.route"] = rule
    name = f"{request.method} {rule}" if rule else request.method
    span = tracer.start_span(
        name, context=propagate.extract(request.headers), kind=SpanKind.SERVER, attributes=attributes
    )
    g.trace_span = span
    g.trace_token = context.attach(trace.set_span_in_context(span))


def _status(response: Response) -> Response:
    span = g.get("trace_span")
    if span is not None:
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
    return response


def _end(exc: BaseException | None) -> None:
    span: Any = g.pop("trace_span", None)
    if span is None:
        return
    from opentelemetry import context

    if exc is not None:
        span.record_exception(exc)
    span.end()
    context.detach(g.pop("trace_token"))
