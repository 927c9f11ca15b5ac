#!/usr/bin/env python3
# ruff: noqa: E501, RUF028
"""Writes the VGW Grafana dashboards (``vgw-*.json`` next to this file).

The JSON files are committed (Grafana's file provisioning reads them as they are, and so does the
Helm chart); this script is their source. After editing it, run ``python3 deploy/dashboards/generate.py``;
tests/deploy fails when the committed JSON differs from what it writes, and checks that every
metric a query names is one the VGW services really export.

Every dashboard takes its Prometheus from the ``datasource`` variable (uid ``prometheus`` in the
compose stack's provisioning) and filters by ``instance``; the control-plane dashboard also reads
traces from the Jaeger datasource (uid ``jaeger``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROM = {"type": "prometheus", "uid": "${datasource}"}
JAEGER = {"type": "jaeger", "uid": "jaeger"}
RATE = "$__rate_interval"


class Board:
    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.variables: list[dict[str, Any]] = []

    # layout: panels flow left to right on a 24-column grid
    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0
        self.panels.append(
            {"type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
             "id": len(self.panels) + 1, "panels": []}
        )  # fmt: skip
        self.y += 1

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
        instant: bool = False,
        **options: Any,
    ) -> None:
        p: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": PROM,
            "gridPos": self._place(w, h),
            "id": len(self.panels) + 1,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": options or {},
            "targets": [
                {
                    "datasource": PROM,
                    "refId": chr(ord("A") + i),
                    "expr": expr,
                    "legendFormat": legend,
                    "instant": instant,
                    "range": not instant,
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10}
        self.panels.append(p)

    def text(self, title: str, content: str, *, w: int = 24, h: int = 4) -> None:
        self.panels.append(
            {"type": "text", "title": title, "gridPos": self._place(w, h), "id": len(self.panels) + 1,
             "options": {"mode": "markdown", "content": content}}
        )  # fmt: skip

    def traces(self, title: str, service: str, operation: str, description: str, *, w: int = 24, h: int = 9) -> None:
        self.panels.append(
            {
                "type": "table",
                "title": title,
                "description": description,
                "datasource": JAEGER,
                "gridPos": self._place(w, h),
                "id": len(self.panels) + 1,
                "targets": [
                    {"datasource": JAEGER, "refId": "A", "queryType": "search", "service": service,
                     "operation": operation, "limit": 50}
                ],
            }
        )  # fmt: skip

    def query_var(self, name: str, label: str, query: str, *, multi: bool = True) -> None:
        self.variables.append(
            {"name": name, "label": label, "type": "query", "datasource": PROM, "query": {"query": query, "refId": "v"},
             "definition": query, "refresh": 2, "includeAll": True, "multi": multi, "allValue": ".*",
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["vgw", *self.tags],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["vgw"],
                    "asDropdown": True,
                    "title": "VGW",
                    "includeVars": True,
                    "keepTime": True,
                }
            ],  # fmt: skip
            "templating": {
                "list": [
                    {
                        "name": "datasource",
                        "label": "Prometheus",
                        "type": "datasource",
                        "query": "prometheus",
                        "current": {"text": "Prometheus", "value": "prometheus"},
                    },  # fmt: skip
                    *self.variables,
                ]
            },
            "annotations": {"list": []},
            "panels": self.panels,
        }


def overview() -> Board:
    b = Board("vgw-overview", "VGW / Overview", "The whole platform at a glance", ["overview"])
    b.panel("stat", "Forwarders up", [("sum(vgw_forwarder_up)", "up")], w=4, h=4, instant=True)
    b.panel("stat", "VIPs announced (node x VIP)", [('sum(vgw_routectl_vips{state="announced"})', "announced")],
            w=4, h=4, instant=True)  # fmt: skip
    b.panel("stat", "VIPs withdrawn (node x VIP)", [('sum(vgw_routectl_vips{state="withdrawn"})', "withdrawn")],
            w=4, h=4, instant=True)  # fmt: skip
    b.panel("stat", "Backends up / down",
            [('sum(vgw_healthcheck_backends{state="up"})', "up"), ('sum(vgw_healthcheck_backends{state="down"})', "down")],
            w=4, h=4, instant=True)  # fmt: skip
    b.panel("stat", "Processes connected to NATS", [("sum(vgw_bus_connected)", "connected"), ("count(vgw_bus_connected)", "all")],
            w=4, h=4, instant=True)  # fmt: skip
    b.panel("stat", "Config revision", [("max(vgw_config_revision)", "revision")], w=4, h=4, instant=True)
    b.panel(
        "stat",
        "VIPs down / degraded (monitor)",
        [
            ("count(max by (vip, port) (vgw_monitor_vip_health) == 2) or vector(0)", "down"),
            ("count(max by (vip, port) (vgw_monitor_vip_health) == 1) or vector(0)", "degraded"),
        ],
        w=24,
        h=4,
        instant=True,
    )
    b.panel("timeseries", "VIP traffic (packets in, all services)",
            [(f'sum(rate(vgw_forwarder_service_packets_total{{direction="in"}}[{RATE}]))', "packets/s")], unit="pps")  # fmt: skip
    b.panel("timeseries", "Forwarder drops",
            [(f"sum by (reason) (rate(vgw_forwarder_drops_total[{RATE}]))", "{{reason}}")], unit="pps")  # fmt: skip
    b.panel("timeseries", "Active connections per node",
            [("sum by (node, instance) (vgw_forwarder_connections)", "{{node}} {{instance}}")])  # fmt: skip
    b.panel("timeseries", "Backend transitions",
            [(f"sum by (state) (increase(vgw_healthcheck_transitions_total[{RATE}]))", "{{state}}")])  # fmt: skip
    return b


def traffic() -> Board:
    b = Board("vgw-traffic", "VGW / VIP traffic and connections",
              "Per-service (VIP:port) traffic and connections from the forwarders' counters", ["traffic"])  # fmt: skip
    b.query_var("instance", "Node (shim)", "label_values(vgw_forwarder_up, instance)")
    sel = 'instance=~"$instance"'
    b.row("Per VIP service")
    b.panel("timeseries", "Packets/s into each service",
            [(f'sum by (service) (rate(vgw_forwarder_service_packets_total{{direction="in",{sel}}}[{RATE}]))', "{{service}}")],
            unit="pps")  # fmt: skip
    b.panel("timeseries", "Bits/s per service and direction",
            [(f"8 * sum by (service, direction) (rate(vgw_forwarder_service_bytes_total{{{sel}}}[{RATE}]))",
              "{{service}} {{direction}}")], unit="bps")  # fmt: skip
    b.panel("timeseries", "New connections/s per service",
            [(f"sum by (service) (rate(vgw_forwarder_service_connections_total{{{sel}}}[{RATE}]))", "{{service}}")],
            unit="cps")  # fmt: skip
    b.panel("timeseries", "Active connections per node",
            [(f"sum by (node, instance) (vgw_forwarder_connections{{{sel}}})", "{{node}} {{instance}}")])  # fmt: skip
    b.panel("table", "Top services by new connections (range)",
            [(f"topk(20, sum by (service) (increase(vgw_forwarder_service_connections_total{{{sel}}}[$__range])))",
              "{{service}}")], w=24, instant=True)  # fmt: skip
    b.row("Per port")
    b.panel("timeseries", "Port packets/s",
            [(f"sum by (instance, port, direction) (rate(vgw_forwarder_port_packets_total{{{sel}}}[{RATE}]))",
              "{{instance}} {{port}} {{direction}}")], unit="pps")  # fmt: skip
    b.panel("timeseries", "Port bits/s",
            [(f"8 * sum by (instance, port, direction) (rate(vgw_forwarder_port_bytes_total{{{sel}}}[{RATE}]))",
              "{{instance}} {{port}} {{direction}}")], unit="bps")  # fmt: skip
    b.row("Forwarder")
    b.panel("state-timeline", "Forwarder up", [(f"vgw_forwarder_up{{{sel}}}", "{{instance}}")], w=12)
    b.panel("timeseries", "State generation", [(f"vgw_forwarder_generation{{{sel}}}", "{{instance}}")], w=12)
    b.panel("timeseries", "Forwarder events/s",
            [(f"sum by (event) (rate(vgw_forwarder_events_total{{{sel}}}[{RATE}]))", "{{event}}")], w=24)  # fmt: skip
    return b


def drops() -> Board:
    b = Board("vgw-drops", "VGW / Forwarder drops", "Packets the forwarders dropped, by reason", ["dataplane"])
    b.query_var("instance", "Node (shim)", "label_values(vgw_forwarder_up, instance)")
    sel = 'instance=~"$instance"'
    b.panel("timeseries", "Drops/s by reason",
            [(f"sum by (reason) (rate(vgw_forwarder_drops_total{{{sel}}}[{RATE}]))", "{{reason}}")], unit="pps", w=24)  # fmt: skip
    b.panel("timeseries", "Drops/s by node and reason",
            [(f"sum by (instance, reason) (rate(vgw_forwarder_drops_total{{{sel}}}[{RATE}]))", "{{instance}} {{reason}}")],
            unit="pps")  # fmt: skip
    b.panel("timeseries", "Drop ratio (drops / packets received)",
            [(f"sum by (instance) (rate(vgw_forwarder_drops_total{{{sel}}}[{RATE}])) / "
              f'sum by (instance) (rate(vgw_forwarder_port_packets_total{{direction="rx",{sel}}}[{RATE}]))',
              "{{instance}}")], unit="percentunit")  # fmt: skip
    b.panel("bargauge", "Drops by reason over the range",
            [(f"sort_desc(sum by (reason) (increase(vgw_forwarder_drops_total{{{sel}}}[$__range])))", "{{reason}}")],
            w=24, instant=True, displayMode="gradient", orientation="horizontal")  # fmt: skip
    return b


def protection() -> Board:
    b = Board("vgw-protection", "VGW / Flood protection",
              "SYN proxy and cookies, half-open entries, evictions, rate limits, RSTs and LIP port exhaustion "
              "(docs/forwarder.md, \"Under attack\")", ["dataplane", "security"])  # fmt: skip
    b.query_var("instance", "Node (shim)", "label_values(vgw_forwarder_up, instance)")
    sel = 'instance=~"$instance"'
    b.panel("stat", "Services with the SYN proxy engaged",
            [(f"count(max by (service, vip) (vgw_forwarder_service_syn_proxy_active{{{sel}}}) == 1) or vector(0)",
              "services")], w=6, h=4, instant=True)  # fmt: skip
    b.panel("stat", "SYN cookies sent/s",
            [(f'sum(rate(vgw_forwarder_service_syn_cookies_total{{result="sent",{sel}}}[{RATE}]))', "cookies/s")],
            unit="ops", w=6, h=4, instant=True)  # fmt: skip
    b.panel("stat", "Half-open connections (all nodes)",
            [(f"sum(vgw_forwarder_half_open_connections{{{sel}}})", "half-open")], w=6, h=4, instant=True)  # fmt: skip
    b.panel("stat", "New connections without a LIP port/s",
            [(f"sum(rate(vgw_forwarder_lip_port_exhausted_total{{{sel}}}[{RATE}]))", "per s")],
            unit="ops", w=6, h=4, instant=True)  # fmt: skip
    b.row("SYN proxy")
    b.panel("timeseries", "SYN cookies/s by result (sent, ok = validated, bad = failed)",
            [(f"sum by (result) (rate(vgw_forwarder_service_syn_cookies_total{{{sel}}}[{RATE}]))", "{{result}}")],
            unit="ops")  # fmt: skip
    b.panel("timeseries", "SYN cookies sent/s per service",
            [(f'topk(10, sum by (service, vip) (rate(vgw_forwarder_service_syn_cookies_total{{result="sent",{sel}}}[{RATE}])))',
              "{{service}} {{vip}}")], unit="ops")  # fmt: skip
    b.panel("state-timeline", "SYN proxy engaged, per service and node",
            [(f"max by (service, instance) (vgw_forwarder_service_syn_proxy_active{{{sel}}})", "{{service}} {{instance}}")],
            w=24, description="1 while the proxy answers the service's SYNs: syn_proxy on, or auto and above its "
            "half-open or SYN-rate threshold.")  # fmt: skip
    b.row("Connection table")
    b.panel("timeseries", "Half-open connections per node",
            [(f"sum by (node, instance) (vgw_forwarder_half_open_connections{{{sel}}})", "{{node}} {{instance}}")],
            description="Connections with only the client's SYN seen. With the SYN proxy engaged a flood creates "
            "none; near a service's syn_proxy_halfopen threshold, auto engages it.")  # fmt: skip
    b.panel("timeseries", "Half-open connections evicted/s per service",
            [(f"sum by (service, vip) (rate(vgw_forwarder_service_evicted_connections_total{{{sel}}}[{RATE}]))",
              "{{service}} {{vip}}")], unit="ops",
            description="Evicted oldest first when the table is nearly full, so that established traffic keeps "
            "its entries.")  # fmt: skip
    b.row("Limits and segments without a connection")
    b.panel("timeseries", "Rate-limit drops/s per service and limit",
            [(f"sum by (service, vip, limit) (rate(vgw_forwarder_service_limit_drops_total{{{sel}}}[{RATE}]))",
              "{{service}} {{limit}}")], unit="pps")  # fmt: skip
    b.panel("timeseries", "Segments without a connection and RSTs sent/s per service",
            [(f"sum by (service, vip) (rate(vgw_forwarder_service_no_conn_drops_total{{{sel}}}[{RATE}]))",
              "no connection {{service}}"),
             (f"sum by (service, vip) (rate(vgw_forwarder_service_rst_sent_total{{{sel}}}[{RATE}]))", "RST {{service}}")],
            unit="pps")  # fmt: skip
    b.row("LIP ports")
    b.panel("timeseries", "New connections without a free LIP port/s, per LIP",
            [(f"sum by (instance, lip) (rate(vgw_forwarder_lip_port_exhausted_total{{{sel}}}[{RATE}]))",
              "{{instance}} {{lip}}")], unit="ops",
            description="A (backend, LIP) pair holds about 64k connections: add LIPs to the service.")  # fmt: skip
    b.panel("table", "LIPs and services out of ports over the range",
            [(f"topk(20, sum by (instance, lip) (increase(vgw_forwarder_lip_port_exhausted_total{{{sel}}}[$__range])))",
              "{{instance}} {{lip}}"),
             (f"topk(20, sum by (service, vip) (increase(vgw_forwarder_service_lip_port_exhausted_total{{{sel}}}[$__range])))",
              "{{service}} {{vip}}")], instant=True)  # fmt: skip
    return b


def backends() -> Board:
    b = Board("vgw-backends", "VGW / Backend health", "What vgw-healthcheck sees and does", ["health"])
    b.query_var("instance", "Healthcheck instance", "label_values(vgw_healthcheck_members, instance)")
    sel = 'instance=~"$instance"'
    b.panel("stat", "Probe streams up", [(f'sum(vgw_healthcheck_backends{{state="up",{sel}}})', "up")], w=6, h=4,
            instant=True)  # fmt: skip
    b.panel("stat", "Probe streams down", [(f'sum(vgw_healthcheck_backends{{state="down",{sel}}})', "down")], w=6,
            h=4, instant=True)  # fmt: skip
    b.panel("stat", "Probe streams (all instances)", [("max(vgw_healthcheck_targets)", "targets")], w=6, h=4,
            instant=True)  # fmt: skip
    b.panel("stat", "Live healthcheck instances", [("max(vgw_healthcheck_members)", "members")], w=6, h=4,
            instant=True)  # fmt: skip
    b.panel("timeseries", "Probe streams by state",
            [(f"sum by (state) (vgw_healthcheck_backends{{{sel}}})", "{{state}}")])  # fmt: skip
    b.panel("timeseries", "Transitions by state and reason",
            [(f"sum by (state, reason) (increase(vgw_healthcheck_transitions_total{{{sel}}}[{RATE}]))",
              "{{state}} {{reason}}")])  # fmt: skip
    b.panel("timeseries", "Probes/s by kind and result",
            [(f"sum by (kind, result) (rate(vgw_healthcheck_probes_total{{{sel}}}[{RATE}]))", "{{kind}} {{result}}")],
            unit="ops")  # fmt: skip
    b.panel("timeseries", "Probe latency p50 / p99 (successful probes)",
            [(f"histogram_quantile(0.5, sum by (le, kind) (rate(vgw_healthcheck_probe_duration_seconds_bucket{{{sel}}}[{RATE}])))",
              "p50 {{kind}}"),
             (f"histogram_quantile(0.99, sum by (le, kind) (rate(vgw_healthcheck_probe_duration_seconds_bucket{{{sel}}}[{RATE}])))",
              "p99 {{kind}}")], unit="s")  # fmt: skip
    b.panel("timeseries", "Probe streams owned per instance",
            [(f"vgw_healthcheck_owned_targets{{{sel}}}", "{{instance}}")])  # fmt: skip
    b.panel("timeseries", "Scheduling lateness p99 and overruns",
            [(f"histogram_quantile(0.99, sum by (le, instance) (rate(vgw_healthcheck_schedule_lateness_seconds_bucket{{{sel}}}[{RATE}])))",
              "lateness p99 {{instance}}"),
             (f"sum by (instance) (rate(vgw_healthcheck_overruns_total{{{sel}}}[{RATE}]))", "overruns/s {{instance}}")],
            unit="s")  # fmt: skip
    return b


def routes() -> Board:
    b = Board("vgw-routes", "VGW / Announce state", "What each node's routectl announces, and why", ["routes", "bgp"])
    b.query_var("instance", "Node (routectl)", "label_values(vgw_routectl_vips, instance)")
    sel = 'instance=~"$instance"'
    b.panel("table", "VIPs per node by state (now)",
            [(f"sum by (node, instance, state) (vgw_routectl_vips{{{sel}}})", "{{node}} {{state}}")],
            w=12, instant=True)  # fmt: skip
    b.panel("timeseries", "VIPs per node by state",
            [(f"sum by (instance, state) (vgw_routectl_vips{{{sel}}})", "{{instance}} {{state}}")], w=12)  # fmt: skip
    b.panel("timeseries", "Route decisions by state and reason",
            [(f"sum by (instance, state, reason) (increase(vgw_routectl_decisions_total{{{sel}}}[{RATE}]))",
              "{{instance}} {{state}} {{reason}}")], w=24)  # fmt: skip
    b.panel("state-timeline", "BGP sessions", [(f"vgw_routectl_bgp_peer_up{{{sel}}}", "{{instance}} {{peer}}")])
    b.panel("state-timeline", "ExaBGP running", [(f"vgw_routectl_speaker_up{{{sel}}}", "{{instance}}")])
    b.panel("timeseries", "Age of the node's dataplane.status",
            [(f"vgw_routectl_dataplane_status_age_seconds{{{sel}}}", "{{instance}}")], unit="s")  # fmt: skip
    b.panel("timeseries", "Withdraw requests known; withdrawals held back",
            [(f"vgw_routectl_withdraw_requests{{{sel}}}", "requests {{instance}}"),
             (f"increase(vgw_routectl_withdrawals_limited_total{{{sel}}}[{RATE}])", "held back {{instance}}")])  # fmt: skip
    b.panel("table", "Each VIP through each node, as the monitor sees it (success ratio)",
            [('min by (vip, port, path) (vgw_monitor_success_ratio{path!="routed"})', "{{vip}}:{{port}} via {{path}}")],
            unit="percentunit", w=24, instant=True,
            description="path = the node the probe was steered through; needs a vantage point with per-node "
            "steering (VGW_MONITOR_STEER).")  # fmt: skip
    b.text("Per VIP",
           "Metrics count VIPs per node and state (bounded labels). The decision for each (node, VIP), with its "
           "reason and gates, is in the `vgw_routes` KV bucket (`vgwctl status`) and in the "
           "`vgw.v1.vip.announce.<vip>.<node>` / `vgw.v1.vip.withdraw.<vip>.<node>` events "
           "(`vgwctl events tail --type io.vgw.vip.withdraw.v1`).", h=3)  # fmt: skip
    return b


def control_plane() -> Board:
    b = Board("vgw-control-plane", "VGW / Control-plane latency",
              "How fast changes go through: health event -> withdraw, config change -> applied", ["latency"])  # fmt: skip
    b.row("Health event -> withdraw")
    b.traces("Backend transitions end to end (Jaeger)", "vgw-healthcheck", "healthcheck transition",
             "One trace per backend transition: the healthcheck's span, then routectl's and the shim's handling "
             "of the event and the resulting announce/withdraw. The trace duration is the health event -> "
             "withdraw latency.")  # fmt: skip
    b.panel("timeseries", "Event handling p99 by consumer and type",
            [(f"histogram_quantile(0.99, sum by (le, job, type) (rate(vgw_bus_handle_seconds_bucket[{RATE}])))",
              "{{job}} {{type}}")], unit="s")  # fmt: skip
    b.panel("timeseries", "ExaBGP command round trip p50 / p99",
            [(f"histogram_quantile(0.5, sum by (le, instance) (rate(vgw_routectl_command_seconds_bucket[{RATE}])))",
              "p50 {{instance}}"),
             (f"histogram_quantile(0.99, sum by (le, instance) (rate(vgw_routectl_command_seconds_bucket[{RATE}])))",
              "p99 {{instance}}")], unit="s")  # fmt: skip
    b.row("Config change -> applied")
    b.panel("timeseries", "Config revision: committed vs applied per node",
            [("max(vgw_config_revision)", "committed"),
             ("vgw_shim_applied_config_revision", "applied {{node}} {{instance}}"),
             ("vgw_healthcheck_config_revision", "healthcheck {{instance}}")])  # fmt: skip
    b.panel("timeseries", "Revisions behind per node",
            [("scalar(max(vgw_config_revision)) - vgw_shim_applied_config_revision", "{{node}} {{instance}}")])  # fmt: skip
    b.panel("timeseries", "Forwarder apply p50 / p99 by mode",
            [(f"histogram_quantile(0.5, sum by (le, mode) (rate(vgw_shim_apply_seconds_bucket[{RATE}])))", "p50 {{mode}}"),
             (f"histogram_quantile(0.99, sum by (le, mode) (rate(vgw_shim_apply_seconds_bucket[{RATE}])))", "p99 {{mode}}")],
            unit="s")  # fmt: skip
    b.panel("timeseries", "ConfigService call p99 by method",
            [(f"histogram_quantile(0.99, sum by (le, method) (rate(vgw_config_grpc_request_seconds_bucket[{RATE}])))",
              "{{method}}")], unit="s")  # fmt: skip
    b.panel("timeseries", "Applies/s by mode and result",
            [(f"sum by (mode, result) (rate(vgw_shim_applies_total[{RATE}]))", "{{mode}} {{result}}")], unit="ops")  # fmt: skip
    b.panel("timeseries", "Commits/s and rejected applies/s",
            [(f"sum by (action) (rate(vgw_config_commits_total[{RATE}]))", "commit {{action}}"),
             (f"sum by (reason) (rate(vgw_config_rejected_total[{RATE}]))", "rejected {{reason}}")], unit="ops")  # fmt: skip
    b.row("Bus")
    b.panel("state-timeline", "Connected to NATS", [("vgw_bus_connected", "{{job}} {{instance}}")], w=24)
    b.panel("timeseries", "Events published/s by type",
            [(f"sum by (type) (rate(vgw_bus_published_messages_total[{RATE}]))", "{{type}}")], unit="ops")  # fmt: skip
    b.panel("timeseries", "Outbox (events waiting for NATS) and drops",
            [("sum by (job, instance) (vgw_bus_outbox_messages)", "waiting {{job}}"),
             (f"sum by (job) (increase(vgw_bus_outbox_dropped_total[{RATE}]))", "dropped {{job}}")])  # fmt: skip
    b.panel("timeseries", "Events received/s by type",
            [(f"sum by (type) (rate(vgw_bus_received_messages_total[{RATE}]))", "{{type}}")], unit="ops")  # fmt: skip
    b.panel("timeseries", "Rejected messages and handler errors",
            [(f"sum by (job, reason) (increase(vgw_bus_rejected_messages_total[{RATE}]))", "rejected {{job}} {{reason}}"),
             (f"sum by (job, type) (increase(vgw_bus_handler_errors_total[{RATE}]))", "errors {{job}} {{type}}"),
             (f"sum by (job, bucket) (increase(vgw_store_rejected_values_total[{RATE}]))", "bad KV value {{bucket}}"),
             (f"sum by (job, bucket) (increase(vgw_store_watch_restarts_total[{RATE}]))", "watch restarts {{bucket}}"),
             (f"sum by (job) (increase(vgw_bus_reconnects_total[{RATE}]))", "reconnects {{job}}")])  # fmt: skip
    return b


def vips() -> Board:
    b = Board(
        "vgw-vips",
        "VGW / VIPs from outside",
        "Each VIP as clients see it: vgw-monitor's end-to-end probes, routed and through each node",
        ["monitor", "sli"],
    )
    b.query_var("vip", "VIP", "label_values(vgw_monitor_success_ratio, vip)")
    sel = 'vip=~"$vip"'
    b.panel(
        "table",
        "VIP status now (0 ok, 1 degraded, 2 down)",
        [(f"max by (vip, port) (vgw_monitor_vip_health{{{sel}}})", "{{vip}}:{{port}}")],
        w=8,
        instant=True,
    )
    b.panel(
        "state-timeline",
        "VIP status",
        [(f"max by (vip, port) (vgw_monitor_vip_health{{{sel}}})", "{{vip}}:{{port}}")],
        w=16,
    )
    b.panel(
        "table",
        "Success ratio per VIP and path (routed, or through each node)",
        [(f"min by (vip, port, path) (vgw_monitor_success_ratio{{{sel}}})", "{{vip}}:{{port}} {{path}}")],
        unit="percentunit",
        w=24,
        instant=True,
        description="The lowest over vantage points. A node whose path fails while the routed path works "
        "is the node that blackholes the VIP.",
    )
    b.panel(
        "timeseries",
        "Success ratio per VIP and path",
        [(f"min by (vip, port, path) (vgw_monitor_success_ratio{{{sel}}})", "{{vip}}:{{port}} {{path}}")],
        unit="percentunit",
    )
    b.panel(
        "timeseries",
        "Probe latency p99 per VIP and path (successful probes)",
        [
            (
                f"histogram_quantile(0.99, sum by (le, vip, path) (rate(vgw_monitor_probe_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                "{{vip}} {{path}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "Failed probes/s by result",
        [
            (
                f'sum by (vip, path, result) (rate(vgw_monitor_probes_total{{result!="ok",{sel}}}[{RATE}]))',
                "{{vip}} {{path}} {{result}}",
            )
        ],
        unit="ops",
    )
    b.panel(
        "timeseries",
        "Withdraw requests (in force; published by kind and action)",
        [
            ("max(vgw_monitor_requests_in_force)", "in force"),
            (f"sum by (kind, action) (increase(vgw_monitor_requests_total[{RATE}]))", "{{kind}} {{action}}"),
        ],
    )
    b.panel(
        "timeseries",
        "Vantage points: leader, probe paths, per-node steering",
        [
            ("vgw_monitor_leader", "leader {{instance}}"),
            ("vgw_monitor_paths", "paths {{instance}}"),
            ("vgw_monitor_steering_ok", "steering ok {{instance}}"),
        ],
        w=24,
    )
    return b


BOARDS = [overview, traffic, drops, protection, backends, routes, control_plane, vips]


def render() -> dict[str, str]:
    return {f"{b.uid}.json": json.dumps(b.to_json(), indent=2, sort_keys=False) + "\n" for b in (f() for f in BOARDS)}


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for name, text in render().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
