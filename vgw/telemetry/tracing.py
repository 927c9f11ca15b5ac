"""OpenTelemetry tracing from the standard ``OTEL_*`` variables.

OTLP is used when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific variable) is set, with
the protocol from ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf`` by default, as the
specification says, or ``grpc``). ``OTEL_TRACES_EXPORTER`` may add ``console`` or say ``none``.
``VGW_TRACE_FILE`` writes spans as JSON lines to a file (the lab uses it when no collector runs).
With none of these, spans are created (so trace ids reach logs and headers) but not exported.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

_provider: TracerProvider | None = None


class JsonLinesFileExporter(SpanExporter):
    """Appends each finished span as one JSON line (the SDK's own JSON form) to a file."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _otlp_exporter() -> SpanExporter | None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")


def setup_tracing(
    service_name: str,
    instance_id: str | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the global tracer provider for this process (once) and return it.

    ``exporter`` is for tests (e.g. ``InMemorySpanExporter``); it is used synchronously.
    """
    global _provider  # noqa: PLW0603 - one provider per process, as OpenTelemetry wants
    if _provider is not None:
        return _provider
    attrs: dict[str, str] = {"service.name": service_name, "service.namespace": "vgw"}
    if instance_id:
        attrs["service.instance.id"] = instance_id
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    provider = TracerProvider(resource=Resource.create(attrs))
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        wanted = {e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
        if "none" not in wanted:
            otlp = _otlp_exporter() if "otlp" in wanted else None
            if otlp is not None:
                provider.add_span_processor(BatchSpanProcessor(otlp))
            if "console" in wanted:
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace_file = os.environ.get("VGW_TRACE_FILE")
        if trace_file:
            provider.add_span_processor(BatchSpanProcessor(JsonLinesFileExporter(trace_file)))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop exporters (part of graceful shutdown)."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
