"""OpenTelemetry traces out over OTLP/HTTP, configured by the standard OTEL_* variables.

`start()` installs a tracer provider with a batching OTLP/HTTP exporter in this process
(each worker its own, after it started: the exporter's thread does not survive a fork);
the SDK reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
itself. Nothing here is imported or run unless tracing is configured.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def start(service_name: str) -> TracerProvider:
    """Install the process's tracer provider (once); `service_name` unless OTEL_SERVICE_NAME."""
    global _provider
    if _provider is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or service_name
        _provider = TracerProvider(resource=Resource.create({"service.name": name}))
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    return _provider


def stop() -> None:
    """Send what is batched and stop the exporter (a worker's shutdown)."""
    if _provider is not None:
        _provider.force_flush(5_000)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
