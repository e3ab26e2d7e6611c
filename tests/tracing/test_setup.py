"""Tracing is set up from OpenTelemetry's own environment, and not at all without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from batchery import tracing
from batchery.errors import ConfigError
from batchery.settings import Settings
from batchery.tracing import setup
from batchery.tracing.files import JsonLinesExporter
from batchery.tracing.sampling import BatchSampler

ROOT = Path(__file__).resolve().parents[2]
OTEL = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_an_endpoint_nothing_is_set_up(settings):
    """A worker app and an API app built with no OTEL_* variables: no SDK tracing loaded, the global provider
    still OpenTelemetry's placeholder, no request hook on the app, and the helpers' shared null context."""
    probe = f"""
import json, os, sys
for name in {OTEL!r}:
    os.environ.pop(name, None)
from opentelemetry import trace
from batchery import tracing
from batchery.app import create_app
from batchery.settings import Settings
from batchery.workers.app import create_worker_app
settings = Settings.from_env()
app = create_app(settings)
create_worker_app(settings)
print(json.dumps({{
    "configured": tracing.configure(settings, "x"),
    "sdk_trace": sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))),
    "provider": type(trace.get_tracer_provider()).__name__,
    "hooks": [f.__module__ for f in app.before_request_funcs.get(None, [])],
    "null": tracing.span("x") is tracing.span("y") and tracing.carrier() == "",
}}))
"""
    env = {**settings.as_env(), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert "batchery.tracing.http" not in found.pop("hooks")
    assert found == {"configured": False, "sdk_trace": [], "provider": "ProxyTracerProvider", "null": True}


def test_an_endpoint_or_a_trace_file_turns_it_on_unless_the_sdk_is_disabled():
    off, on = Settings(), Settings(trace_file="/tmp/spans.jsonl")
    assert not setup.wanted(off, {})
    assert setup.wanted(off, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"})
    assert setup.wanted(off, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"})
    assert setup.wanted(on, {})
    assert not setup.wanted(on, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"})


def test_the_provider_takes_service_sampler_and_exporter_from_the_environment(clean_env, tmp_path):
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = setup.build_provider(Settings(trace_file=str(tmp_path / "spans.jsonl")), "batchery-worker")
    try:
        assert provider.resource.attributes["service.name"] == "batchery-worker", "batchery's name when none is set"
        assert provider.sampler.get_description() == (
            "BatchSampler{ParentBased{root:TraceIdRatioBased{0.25},remoteParentSampled:AlwaysOnSampler,"
            "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
            "localParentNotSampled:AlwaysOffSampler}}"
        )
        kinds = [type(p.span_exporter) for p in provider._active_span_processor._span_processors]
        assert kinds == [OTLPSpanExporter, JsonLinesExporter]
        exporter = provider._active_span_processor._span_processors[0].span_exporter
        assert exporter._endpoint == "http://collector:4318/v1/traces", "the SDK's own reading of the endpoint"
    finally:
        provider.shutdown()
    clean_env.setenv("OTEL_SERVICE_NAME", "embedder-eu")
    clean_env.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = setup.build_provider(Settings(), "batchery-worker")
    assert provider.resource.attributes["service.name"] == "embedder-eu"
    assert provider._active_span_processor._span_processors == ()
    provider.shutdown()


def test_an_otlp_protocol_without_its_exporter_is_a_config_error(clean_env):
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        setup.otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="http/json"):
        setup.otlp_exporter({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})


def context(sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(0x1234, 0x5678, True, flags)


def test_a_batch_is_sampled_when_any_chunk_it_served_was():
    sampler = BatchSampler(ParentBased(TraceIdRatioBased(0.0)))
    decide = lambda parent, links: sampler.should_sample(parent, 0xABC, "batchery.batch", links=links).decision
    assert decide(None, [Link(context(False)), Link(context(True))]) == Decision.RECORD_AND_SAMPLE
    assert decide(None, [Link(context(False))]) == Decision.DROP, "the environment's sampler for the rest"
    assert decide(None, []) == Decision.DROP
    child_of_unsampled = set_span_in_context(NonRecordingSpan(context(False)))
    assert decide(child_of_unsampled, [Link(context(True))]) == Decision.DROP, "a child follows its parent"
    assert BatchSampler(ALWAYS_OFF).should_sample(None, 1, "x").decision == Decision.DROP


def test_the_trace_file_holds_one_json_line_per_span_from_every_process(tmp_path, memory_tracing):
    path = tmp_path / "spans.jsonl"
    first, second = JsonLinesExporter(str(path)), JsonLinesExporter(str(path))
    with tracing.span("a"):
        pass
    with tracing.span("b"):
        pass
    a, b = memory_tracing.get_finished_spans()
    first.export([a])
    second.export([b, a])
    first.shutdown()
    second.shutdown()
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["a", "b", "a"]
