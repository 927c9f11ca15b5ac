"""Telemetry: OpenTelemetry tracing setup, messaging spans, gRPC instrumentation, and the
Prometheus /metrics + /healthz + /readyz endpoint."""

from .endpoint import Health, MetricsEndpoint
from .tracing import setup_tracing, tracer

__all__ = ["Health", "MetricsEndpoint", "setup_tracing", "tracer"]
