"""Prometheus metrics of the config service (bounded labels: method names, gRPC codes, actions, reasons,
identities from issued certificates and tokens)."""

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
AUTH_FAILURES = Counter(
    "vgw_config_api_auth_failures_total",
    "ConfigService calls refused by authentication or authorization (identity: cert:<CN>, token:<name> or "
    "anonymous; bounded by the certificates and tokens issued)",
    ["reason", "identity"],
)
INSECURE = Gauge(
    "vgw_config_api_insecure",
    "1 when the ConfigService listens on a non-loopback address without TLS and authentication "
    "(VGW_CONFIG_INSECURE=true)",
)
WATCH_REFUSED = Counter("vgw_config_watch_refused_total", "Watch streams refused by the caps", ["scope"])
