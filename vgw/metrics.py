"""Prometheus metrics of the shared library (bus and store). Label sets are bounded: event types
come from the registry, rejection reasons from a fixed list."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BUS_CONNECTED = Gauge("vgw_bus_connected", "1 while the NATS connection is up")
BUS_RECONNECTS = Counter("vgw_bus_reconnects_total", "NATS reconnections")
BUS_PERMISSION_ERRORS = Counter(
    "vgw_bus_permission_errors_total",
    "Publishes or subscriptions NATS refused for this process's identity (permissions violation)",
    ["identity", "operation"],
)
BUS_AUTH_FAILURES = Counter(
    "vgw_bus_auth_failures_total", "Connections NATS refused for this process's credentials", ["identity"]
)
BUS_PUBLISHED = Counter("vgw_bus_published_messages_total", "Events published", ["type"])
BUS_RECEIVED = Counter("vgw_bus_received_messages_total", "Valid events received", ["type"])
BUS_REJECTED = Counter(
    "vgw_bus_rejected_messages_total", "Messages rejected as malformed, unknown or invalid", ["reason"]
)
BUS_HANDLER_ERRORS = Counter("vgw_bus_handler_errors_total", "Event handlers that raised", ["type"])
BUS_OUTBOX = Gauge("vgw_bus_outbox_messages", "Events waiting to be stored (NATS or JetStream unavailable)")
BUS_OUTBOX_DROPPED = Counter("vgw_bus_outbox_dropped_total", "Events dropped because the outbox was full", ["type"])
BUS_HANDLE_SECONDS = Histogram(
    "vgw_bus_handle_seconds",
    "Time spent handling one event",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_REJECTED = Counter("vgw_store_rejected_values_total", "KV values that failed validation", ["bucket"])
STORE_WATCH_RESTARTS = Counter("vgw_store_watch_restarts_total", "KV watches rebuilt from a snapshot", ["bucket"])

CONFIG_REVISIONS_REJECTED = Counter(
    "vgw_config_revisions_rejected_total",
    "Config revisions a follower read from the store and refused because they fail validation",
)
