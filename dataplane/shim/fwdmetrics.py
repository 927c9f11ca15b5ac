"""The forwarder's flood-protection counters as Prometheus metrics (docs/shim.md, "Metrics").

They come from the ``STATS`` reply (docs/forwarder.md): per service, the SYN proxy's state and
cookies, evictions under table pressure, rate-limit drops, mid-flow segments without a connection
and the RSTs answered to them, LIP port exhaustion; per LIP, port exhaustion; for the node, the
half-open connections. Per-service series carry ``service`` and ``vip`` (the VIP a flood targets is
what an alert names); the TCP-only ones are left out for UDP services so a node's series stay few.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

GAUGE_COUNTERS = {"conn_active", "conn_halfopen"}
"""Names in the STATS ``counters`` object that are gauges, not counters."""


def half_open_metric(counters: Mapping[str, Any]) -> Iterator[Any]:
    if "conn_halfopen" not in counters:
        return
    g = GaugeMetricFamily(
        "vgw_forwarder_half_open_connections",
        "TCP connections in the tables of all workers with only the client's SYN seen (SYN_RECV)",
    )
    g.add_metric([], float(counters["conn_halfopen"]))
    yield g


def protection_metrics(stats: Mapping[str, Any]) -> Iterator[Any]:
    """Per-service flood-protection metrics and per-LIP port exhaustion from one STATS reply."""
    labels = ["service", "vip"]
    cookies = CounterMetricFamily(
        "vgw_forwarder_service_syn_cookies",
        "SYN cookies per service: sent (a SYN answered with a cookie SYN-ACK), ok (an ACK validated one: "
        "connection opened), bad (an ACK with no connection failed validation)",
        labels=[*labels, "result"],
    )
    proxy = GaugeMetricFamily(
        "vgw_forwarder_service_syn_proxy_active",
        "1 while the forwarder's SYN proxy answers the service's SYNs (syn_proxy on, or auto engaged) on any worker",
        labels=labels,
    )
    evicted = CounterMetricFamily(
        "vgw_forwarder_service_evicted_connections",
        "Half-open connections of the service evicted under connection-table pressure",
        labels=labels,
    )
    limits = CounterMetricFamily(
        "vgw_forwarder_service_limit_drops",
        "New connections dropped by the service's rate caps: cps (total), src24 (per client /24)",
        labels=[*labels, "limit"],
    )
    no_conn = CounterMetricFamily(
        "vgw_forwarder_service_no_conn_drops",
        "Mid-flow TCP segments to the service without a connection (ACK floods, flows lost in a restart)",
        labels=labels,
    )
    rst = CounterMetricFamily(
        "vgw_forwarder_service_rst_sent",
        "RSTs the forwarder answered to segments without a connection (rst_unknown)",
        labels=labels,
    )
    lport = CounterMetricFamily(
        "vgw_forwarder_service_lip_port_exhausted",
        "New connections of the service that found no free LIP port",
        labels=labels,
    )
    for name, s in stats.get("services", {}).items():
        if "syn_cookie_sent" not in s:  # a forwarder without flood protection
            continue
        lv = [name, str(s.get("vip", ""))]
        limits.add_metric([*lv, "cps"], float(s.get("drop_limit_cps", 0)))
        limits.add_metric([*lv, "src24"], float(s.get("drop_limit_src24", 0)))
        lport.add_metric(lv, float(s.get("lport_exhausted", 0)))
        if s.get("proto") == "udp":
            continue
        for result in ("sent", "ok", "bad"):
            cookies.add_metric([*lv, result], float(s.get(f"syn_cookie_{result}", 0)))
        proxy.add_metric(lv, 1.0 if s.get("syn_proxy_active", 0) else 0.0)
        evicted.add_metric(lv, float(s.get("conn_evicted", 0)))
        no_conn.add_metric(lv, float(s.get("drop_no_conn", 0)))
        rst.add_metric(lv, float(s.get("rst_sent", 0)))
    yield from (cookies, proxy, evicted, limits, no_conn, rst, lport)
    if "lips" in stats:
        lips = CounterMetricFamily(
            "vgw_forwarder_lip_port_exhausted",
            "New connections that found no free port on this LIP (only LIPs where that happened)",
            labels=["lip"],
        )
        for lip, entry in stats["lips"].items():
            lips.add_metric([lip], float(entry.get("lport_exhausted", 0)))
        yield lips
