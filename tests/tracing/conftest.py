"""What the tracing tests share: spans from either side of a process boundary, read as one shape, and an OTLP
sink that decodes what an exporter really sends."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from batchery import tracing
from batchery.tracing.sampling import BatchSampler


@dataclass(frozen=True)
class Span:
    """A finished span as the tests compare them, whichever process made it."""

    name: str
    kind: str
    trace: str
    id: str
    parent: str | None
    attributes: dict[str, Any]
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    service: str = ""
    start: str = ""
    end: str = ""
    status: str = "UNSET"
    events: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, span: ReadableSpan) -> "Span":
        """An in-memory span, through the very JSON the trace file holds."""
        return cls.from_json(json.loads(span.to_json(indent=None)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Span":
        return cls(
            data["name"],
            data["kind"].removeprefix("SpanKind."),
            data["context"]["trace_id"],
            data["context"]["span_id"],
            data["parent_id"],
            data["attributes"],
            [(link["context"]["trace_id"], link["context"]["span_id"], link["attributes"]) for link in data["links"]],
            data["resource"]["attributes"].get("service.name", ""),
            data["start_time"],
            data["end_time"],
            data["status"]["status_code"],
            [(event["name"], event["timestamp"]) for event in data["events"]],
        )


def read_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    return [Span.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def memory_tracing() -> Iterator[InMemorySpanExporter]:
    """batchery's instrumentation in this process traces into memory, for the length of the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=BatchSampler(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


class OtlpSink:
    """An OTLP/HTTP collector of the smallest kind: it decodes each export request and keeps its spans."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                sink.paths.append(self.path)
                sink.requests.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[tuple[str, str, str]]:
        """(service name, span name, span id as 0x-hex) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource_spans.scope_spans:
                    found += [(service, s.name, "0x" + s.span_id.hex()) for s in scope.spans]
        return found


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    sink.thread.start()
    yield sink
    sink.server.shutdown()
