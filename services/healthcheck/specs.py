"""From a configured health check to the probe that runs it."""

from __future__ import annotations

from vgw.config import HealthCheck
from vgw.probes import GrpcSpec, HttpSpec, Spec, TcpSendExpectSpec, TcpSpec, UdpSpec


def _ranges(expected: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for r in expected:
        low, _, high = r.partition("-")
        out.append((int(low), int(high or low)))
    return tuple(out)


def probe_spec(check: HealthCheck) -> Spec:
    t = check.timeout
    if check.kind == "tcp":
        return TcpSpec(t)
    if check.kind in ("tcp_send_expect", "udp"):
        payload = check.payload
        send = payload.send_bytes() if payload else b""
        expect = payload.expect_bytes() if payload else None
        if check.kind == "udp":
            return UdpSpec(t, send, expect)
        # Validation requires an expect for tcp_send_expect; without one, a connect is enough.
        return TcpSendExpectSpec(t, send, expect) if expect is not None else TcpSpec(t)
    if check.kind in ("http", "https"):
        h = check.http_params()
        return HttpSpec(
            t,
            tls=check.kind == "https",
            method=h.method,
            path=h.path,
            host=h.host,
            expect_status=_ranges(list(h.expected_status)),
            body_contains=h.body_contains.encode() if h.body_contains else None,
            tls_verify=h.tls_verify,
            headers=tuple(h.headers.items()),
        )
    g = check.grpc_params()
    return GrpcSpec(t, g.service, g.tls, g.authority)
