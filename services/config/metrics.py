"""Prometheus metrics of the config service (bounded labels: method names, gRPC codes, actions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("vgw_config_grpc_requests_total", "ConfigService calls", ["method", "code"])
REQUEST_SECONDS = Histogram(
    "vgw_config_grpc_request_seconds",
    "ConfigService call duration",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMITS = Counter("vgw_config_commits_total", "Revisions committed", ["action"])
REJECTED = Counter("vgw_config_rejected_total", "Applies rejected", ["reason"])
REVISION = Gauge("vgw_config_revision", "The current configuration revision")
WATCH_STREAMS = Gauge("vgw_config_watch_streams", "Open Watch streams")
GC_DELETED = Counter("vgw_config_gc_deleted_chunks_total", "Unreferenced chunks deleted")
