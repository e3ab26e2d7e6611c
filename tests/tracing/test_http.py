"""The API's server span: one per request, named by its route, continuing a caller's trace."""

from __future__ import annotations

import pytest

from batchery.app import create_app
from tests.tracing.conftest import Span

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def client(settings, memory_tracing):
    return create_app(settings).test_client()


def test_a_request_span_continues_the_callers_trace_and_names_the_route(client, memory_tracing):
    answer = client.get("/v1/jobs/" + "0" * 32, headers={"traceparent": CALLER})
    assert answer.status_code == 404
    (span,) = map(Span.of, memory_tracing.get_finished_spans())
    assert (span.name, span.kind) == ("GET /v1/jobs/<job_id>", "SERVER")
    assert (span.trace, span.parent) == ("0x4bf92f3577b34da6a3ce929d0e0e4736", "0x00f067aa0ba902b7")
    assert span.attributes == {
        "http.request.method": "GET",
        "url.path": "/v1/jobs/" + "0" * 32,
        "http.route": "/v1/jobs/<job_id>",
        "http.response.status_code": 404,
    }


def test_probes_and_scrapes_make_no_span_and_an_unknown_path_one_named_by_its_method(client, memory_tracing):
    for path in ("/healthz", "/metrics", "/readyz", "/v1/overview"):
        client.get(path)
    assert memory_tracing.get_finished_spans() == ()
    client.get("/nowhere")
    (span,) = map(Span.of, memory_tracing.get_finished_spans())
    assert span.name == "GET" and span.parent is None and "http.route" not in span.attributes
