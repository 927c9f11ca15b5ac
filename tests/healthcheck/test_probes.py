"""Every check type against real servers on loopback, up and down, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backends import GrpcBackend, HttpBackend, TcpBackend, UdpBackend, self_signed_cert
from tests.support.nats_server import free_port
from vgw.events import ProbeResult
from vgw.probes import (
    GrpcSpec,
    HttpSpec,
    Prober,
    Target,
    TcpSendExpectSpec,
    TcpSpec,
    UdpSpec,
)

T = 1.0


async def probe(port: int, spec: object) -> tuple[ProbeResult, str]:
    prober = Prober(Target("127.0.0.1", port), spec)  # type: ignore[arg-type]
    try:
        out = await prober.probe()
    finally:
        await prober.close()
    return out.result, out.detail


async def test_tcp_connect() -> None:
    b = await TcpBackend().start()
    try:
        assert (await probe(b.port, TcpSpec(T)))[0] is ProbeResult.OK
    finally:
        await b.stop()
    assert (await probe(b.port, TcpSpec(T)))[0] is ProbeResult.REFUSED


@pytest.mark.parametrize(
    ("mode", "result"),
    [
        ("expect", ProbeResult.OK),
        ("wrong", ProbeResult.EXPECT_MISMATCH),
        ("hang", ProbeResult.TIMEOUT),
        ("reset", ProbeResult.RESET),
        ("garbage", ProbeResult.EXPECT_MISMATCH),
    ],
)
async def test_tcp_send_expect(mode: str, result: ProbeResult) -> None:
    b = await TcpBackend(mode).start()
    try:
        got = await probe(b.port, TcpSendExpectSpec(0.5, b"PING\n", b"PONG"))
    finally:
        await b.stop()
    assert got[0] is result, got


async def test_udp() -> None:
    echo = await UdpBackend(b"PONG").start()
    wrong = await UdpBackend(b"NOPE").start()
    silent = await UdpBackend(None).start()
    try:
        assert (await probe(echo.port, UdpSpec(T, b"PING", b"PONG")))[0] is ProbeResult.OK
        assert (await probe(wrong.port, UdpSpec(T, b"PING", b"PONG")))[0] is ProbeResult.EXPECT_MISMATCH
        assert (await probe(silent.port, UdpSpec(0.3, b"PING", b"PONG")))[0] is ProbeResult.TIMEOUT
        assert (await probe(silent.port, UdpSpec(0.3, b"PING")))[0] is ProbeResult.OK  # silence without expect
    finally:
        for b in (echo, wrong, silent):
            b.stop()
    closed = free_port()
    result, detail = await probe(closed, UdpSpec(T, b"PING"))
    assert result is ProbeResult.REFUSED and "ICMP" in detail


async def test_http_status_body_and_host() -> None:
    b = HttpBackend(200, b"all systems healthy").start()
    try:
        ok = HttpSpec(T, path="/health", host="web.example", body_contains=b"healthy")
        assert await probe(b.port, ok) == (ProbeResult.OK, "HTTP 200")
        assert b.requests[-1] == ("/health", f"web.example:{b.port}")
        assert (await probe(b.port, HttpSpec(T, body_contains=b"ready")))[0] is ProbeResult.BODY_MISMATCH
        b.status = 503
        assert await probe(b.port, HttpSpec(T)) == (ProbeResult.STATUS, "HTTP 503")
        assert (await probe(b.port, HttpSpec(T, expect_status=((500, 503),))))[0] is ProbeResult.OK
    finally:
        b.stop()


@pytest.mark.parametrize(("mode", "result"), [("hang", ProbeResult.TIMEOUT), ("garbage", ProbeResult.PROTOCOL_ERROR),
                                              ("reset", ProbeResult.RESET)])  # fmt: skip
async def test_http_misbehaving_backends(mode: str, result: ProbeResult) -> None:
    b = await TcpBackend(mode).start()
    try:
        got = await probe(b.port, HttpSpec(0.5))
    finally:
        await b.stop()
    assert got[0] is result, got


async def test_https_verify_on_and_off(tmp_path: Path) -> None:
    b = HttpBackend(200, b"ok", tls=self_signed_cert(tmp_path)).start()
    try:
        assert (await probe(b.port, HttpSpec(T, tls=True, host="backend.test")))[0] is ProbeResult.OK
        result, detail = await probe(b.port, HttpSpec(T, tls=True, host="backend.test", tls_verify=True))
        assert result is ProbeResult.TLS_ERROR and "CERTIFICATE" in detail.upper()
        # plain HTTP to a TLS port is not HTTP
        assert (await probe(b.port, HttpSpec(T)))[0] in (ProbeResult.PROTOCOL_ERROR, ProbeResult.RESET)
    finally:
        b.stop()


async def test_grpc_health() -> None:
    g = await GrpcBackend().start()
    try:
        await g.set("vgw.Web", True)
        assert await probe(g.port, GrpcSpec(T, "vgw.Web")) == (ProbeResult.OK, "SERVING")
        await g.set("vgw.Web", False)
        assert await probe(g.port, GrpcSpec(T, "vgw.Web")) == (ProbeResult.NOT_SERVING, "NOT_SERVING")
        assert (await probe(g.port, GrpcSpec(T, "unknown.Service")))[0] is ProbeResult.NOT_SERVING
    finally:
        await g.stop()
    assert (await probe(g.port, GrpcSpec(T, "vgw.Web")))[0] in (ProbeResult.REFUSED, ProbeResult.UNREACHABLE)
