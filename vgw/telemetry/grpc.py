"""gRPC instrumentation. OpenTelemetry's grpc instrumentors patch channel and server constructors,
so these must run before any server or channel is created; both are idempotent."""

from __future__ import annotations

from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

_server = GrpcAioInstrumentorServer()
_client = GrpcAioInstrumentorClient()


def instrument_grpc_server() -> None:
    if not _server.is_instrumented_by_opentelemetry:
        _server.instrument()


def instrument_grpc_client() -> None:
    if not _client.is_instrumented_by_opentelemetry:
        _client.instrument()
