"""From configuration to probes: a health check (healthcheck) or a VIP monitor probe (monitor)
becomes the :mod:`vgw.probes` spec that runs it. One place, so both read the config the same way."""

from __future__ import annotations

from vgw.config import HealthCheck, HttpParams, MonitorProbe, PayloadParams
from vgw.probes import GrpcSpec, HttpSpec, Spec, TcpSendExpectSpec, TcpSpec, UdpSpec


def _ranges(expected: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for r in expected:
        low, _, high = r.partition("-")
        out.append((int(low), int(high or low)))
    return tuple(out)


def _http(timeout_s: float, tls: bool, h: HttpParams) -> HttpSpec:
    return HttpSpec(
        timeout_s,
        tls=tls,
        method=h.method,
        path=h.path,
        host=h.host,
        expect_status=_ranges(list(h.expected_status)),
        body_contains=h.body_contains.encode() if h.body_contains else None,
        tls_verify=h.tls_verify,
        headers=tuple(h.headers.items()),
    )


def _udp(timeout_s: float, payload: PayloadParams | None) -> UdpSpec:
    return UdpSpec(timeout_s, payload.send_bytes() if payload else b"", payload.expect_bytes() if payload else None)


def from_health_check(check: HealthCheck) -> Spec:
    t = check.timeout
    if check.kind == "tcp":
        return TcpSpec(t)
    if check.kind == "udp":
        return _udp(t, check.payload)
    if check.kind == "tcp_send_expect":
        expect = check.payload.expect_bytes() if check.payload else None
        send = check.payload.send_bytes() if check.payload else b""
        # Validation requires an expect for tcp_send_expect; without one, a connect is enough.
        return TcpSendExpectSpec(t, send, expect) if expect is not None else TcpSpec(t)
    if check.kind in ("http", "https"):
        return _http(t, check.kind == "https", check.http_params())
    g = check.grpc_params()
    return GrpcSpec(t, g.service, g.tls, g.authority)


def from_monitor_probe(probe: MonitorProbe) -> Spec:
    if probe.kind == "tcp":
        return TcpSpec(probe.timeout)
    if probe.kind == "udp":
        return _udp(probe.timeout, probe.payload)
    return _http(probe.timeout, probe.kind == "https", probe.http or HttpParams())
