"""Prometheus metrics of the shared library (bus and store). Label sets are bounded: event types
come from the registry, rejection reasons from a fixed list."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from vgw.buildinfo import build_info

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
BUS_LIVE_UNSENT = Counter(
    "vgw_bus_live_unsent_total", "Live events (heartbeats) not sent because NATS was away", ["type"]
)
BUS_OUTBOX_DROPPED = Counter("vgw_bus_outbox_dropped_total", "Events dropped because the outbox was full", ["type"])
BUS_HANDLE_SECONDS = Histogram(
    "vgw_bus_handle_seconds",
    "Time spent handling one event",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_REJECTED = Counter("vgw_store_rejected_values_total", "KV values that failed validation", ["bucket"])
STORE_WATCH_RESTARTS = Counter("vgw_store_watch_restarts_total", "KV watches rebuilt from a snapshot", ["bucket"])
STORE_RETRIES = Counter(
    "vgw_store_retries_total", "KV or stream calls retried after a transient JetStream error (e.g. an election)", ["op"]
)
JS_REPLICAS = Gauge(
    "vgw_js_replicas",
    "Replicas of a JetStream stream this process uses (a KV bucket is stream KV_<bucket>)",
    ["stream"],
)
JS_REPLICAS_WANTED = Gauge("vgw_js_replicas_wanted", "Replicas this process wants (VGW_JS_REPLICAS, or its default)")
JS_REPLICAS_MISMATCH = Gauge(
    "vgw_js_replicas_mismatch",
    "1 when the stream's replicas differ from VGW_JS_REPLICAS (docs/settings.md)",
    ["stream"],
)

CONFIG_REVISIONS_REJECTED = Counter(
    "vgw_config_revisions_rejected_total",
    "Config revisions a follower read from the store and refused because they fail validation",
)


class _BuildInfo:
    """``vgw_build_info{version,commit,python} 1`` in every process that imports this module (every
    service: the bus does). Read at the first scrape, not at import: finding the commit may run git."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("vgw_build_info", "", labels=["version", "commit", "python"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = build_info()
        family = GaugeMetricFamily(
            "vgw_build_info",
            "The running VGW's version, git commit and Python (always 1)",
            labels=["version", "commit", "python"],
        )
        family.add_metric([info.version, info.commit, info.python], 1)
        yield family


REGISTRY.register(_BuildInfo())
