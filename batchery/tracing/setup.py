"""Tracing is set up from OpenTelemetry's own environment variables, or not at all.

It is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set, or ``BATCHERY_TRACE_FILE`` is, and ``OTEL_SDK_DISABLED`` is not ``true``. Everything else is the SDK's to
read: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the service name defaults to ``batchery-api`` or
``batchery-worker``), ``OTEL_TRACES_SAMPLER`` and its argument, ``OTEL_BSP_*`` for the batching of exports,
``OTEL_EXPORTER_OTLP_*`` for the endpoint, headers, timeout and protocol, ``OTEL_PROPAGATORS``.

Off, nothing is set up: the SDK's tracing is not imported, :func:`span` hands back one shared null context, and the
instrumentation elsewhere checks :func:`active` before it builds anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, ContextManager, Mapping

from batchery import __version__
from batchery.errors import ConfigError
from batchery.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

#: The variables whose presence turns tracing on (beside ``BATCHERY_TRACE_FILE``).
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The OTLP protocol the installed exporter speaks; ``grpc`` needs opentelemetry-exporter-otlp-proto-grpc.
HTTP_PROTOBUF = "http/protobuf"
_NOTHING = contextlib.nullcontext()
_tracer: "Tracer | None" = None
_provider: "TracerProvider | None" = None


def wanted(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process should trace: an OTLP endpoint or a trace file, and the SDK not disabled."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(settings.trace_file or any(environ.get(name) for name in ENDPOINTS))


def configure(settings: Settings, service: str, resource: Mapping[str, Any] | None = None) -> bool:
    """Set tracing up for this process, once, when the environment asks for it; True when it is on.

    ``service`` is the ``service.name`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names one;
    ``resource`` adds attributes of the process (a worker's name), which the environment's override.
    The provider becomes OpenTelemetry's global one, so that other instrumentation joins the same traces.
    """
    global _provider
    if _tracer is not None:
        return True
    if not wanted(settings):
        return False
    from opentelemetry import trace

    _provider = build_provider(settings, service, resource)
    trace.set_tracer_provider(_provider)
    install(_provider)
    log.info("tracing on: service %s, exporting to %s", service, _destinations(settings))
    return True


def build_provider(settings: Settings, service: str, extra: Mapping[str, Any] | None = None) -> "TracerProvider":
    """The SDK's provider as its environment describes it, with batchery's sampler around the SDK's."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from batchery.tracing.sampling import BatchSampler

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    resource = Resource({"process.pid": os.getpid(), **(extra or {})}).merge(resource)
    provider = TracerProvider(resource=resource)
    provider.sampler = BatchSampler(provider.sampler)
    for exporter in exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exporters(settings: Settings, environ: Mapping[str, str] | None = None) -> list["SpanExporter"]:
    """OTLP when an endpoint is set (and ``OTEL_TRACES_EXPORTER`` is not ``none``), the trace file when set."""
    environ = os.environ if environ is None else environ
    found: list[SpanExporter] = []
    names = {n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")}
    if any(environ.get(name) for name in ENDPOINTS) and "none" not in names:
        found.append(otlp_exporter(environ))
    if settings.trace_file:
        from batchery.tracing.files import JsonLinesExporter

        found.append(JsonLinesExporter(settings.trace_file))
    return found


def otlp_exporter(environ: Mapping[str, str]) -> "SpanExporter":
    """The OTLP exporter for ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``, configured by the SDK from the environment."""
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or HTTP_PROTOBUF
    )
    if protocol == HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError as exc:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc installed "
                "(batchery installs the http/protobuf exporter: point the endpoint at the collector's port 4318)"
            ) from exc
        return GrpcExporter()
    raise ConfigError(f"OTLP protocol {protocol!r} is not supported: use {HTTP_PROTOBUF} or grpc")


def _destinations(settings: Settings) -> str:
    found = [os.environ.get(name) for name in reversed(ENDPOINTS) if os.environ.get(name)][:1]
    return ", ".join(found + ([settings.trace_file] if settings.trace_file else [])) or "nowhere"


def install(provider: Any) -> None:
    """Trace through ``provider`` from now on (tests hand in one with an in-memory exporter)."""
    global _tracer
    _tracer = provider.get_tracer("batchery", __version__)


def uninstall() -> None:
    """Back to tracing nothing (the provider, if any, stays OpenTelemetry's global one)."""
    global _tracer
    _tracer = None


def tracer() -> "Tracer | None":
    return _tracer


def active() -> bool:
    return _tracer is not None


def span(name: str, attributes: dict[str, Any] | None = None) -> ContextManager[Any]:
    """An internal span around a block, current inside it; a shared null context when tracing is off."""
    if _tracer is None:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=attributes)


def flush(timeout_s: float = 5.0) -> None:
    """Export what is finished (a worker about to exit)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))
