"""Prometheus metrics of routectl (``vgw_routectl_*``). Labels are bounded: peers come from the
node's config (at most 16), states and reasons from fixed enums."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PEER_UP = Gauge("vgw_routectl_bgp_peer_up", "1 while the BGP session with the peer is established", ["peer"])
SPEAKER_UP = Gauge("vgw_routectl_speaker_up", "1 while ExaBGP runs and its API process is connected")
SPEAKER_RESTARTS = Counter("vgw_routectl_speaker_restarts_total", "ExaBGP restarts after a failure")
COMMAND_SECONDS = Histogram(
    "vgw_routectl_command_seconds",
    "ExaBGP API command round trip (until its acknowledgement)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
COMMAND_ERRORS = Counter("vgw_routectl_command_errors_total", "ExaBGP API commands answered with an error")
VIPS = Gauge("vgw_routectl_vips", "VIPs of this node by route state", ["state"])
DECISIONS = Counter(
    "vgw_routectl_decisions_total", "Route decisions that changed a VIP's state or reason", ["state", "reason"]
)
LIMITED = Counter(
    "vgw_routectl_withdrawals_limited_total", "Health-driven withdrawals held back by the per-minute limit"
)
FORWARDER_AGE = Gauge("vgw_routectl_dataplane_status_age_seconds", "Age of the last dataplane.status of this node")
REQUESTS = Gauge("vgw_routectl_withdraw_requests", "Node and cluster withdraw requests known (in force or expired)")
DRAINS_STARTED = Counter("vgw_routectl_drains_started_total", "Drains of this node started (node.drain.started)")
DRAINS_COMPLETED = Counter(
    "vgw_routectl_drains_completed_total",
    "Drains of this node ended (node.drain.completed), by reason: idle, timeout, cancelled",
    ["reason"],
)
DRAIN_SECONDS = Histogram(
    "vgw_routectl_drain_seconds",
    "Duration of completed drains (idle or timeout), from the drain's start",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
DRAIN_PHASE = Gauge(
    "vgw_routectl_drain_phase",
    "1 while this node drains (draining: deprioritised) or is drained (withdrawn)",
    ["phase"],
)
DRAIN_CONNECTIONS = Gauge(
    "vgw_routectl_drain_connections",
    "While draining: the connections the drain counts (half-open ones left out; -1 = unknown)",
)
DRAIN_SECONDS_LEFT = Gauge("vgw_routectl_drain_seconds_left", "While draining: seconds until the drain's timeout")
EVALUATIONS = Counter(
    "vgw_routectl_evaluations_total",
    "Evaluations of every VIP's decision (one per burst of changes, plus the periodic tick)",
)
LOCAL_FORWARDER_UP = Gauge(
    "vgw_routectl_local_forwarder_up",
    "1 while the node's forwarder answers on its control socket (VGW_FWD_SOCKET; 0 when not set or not answering)",
)
LOCAL_VERDICTS = Counter(
    "vgw_routectl_local_verdicts_total",
    "Evaluations in which the forwarder's own answer overrode the heartbeat: it is gone (withdraw), or it vouches "
    "for the last heartbeat (the shim or NATS is away)",
    ["verdict"],
)
