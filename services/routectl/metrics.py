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
