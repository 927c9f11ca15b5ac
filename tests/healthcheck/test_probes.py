"""Every check type against real servers on loopback, up and down, with the reason."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import vgw.probes
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


class ClosingServer:
    """Accepts and records how each client went away: "reset" (RST) or "fin" (a graceful close,
    which would leave the prober a TIME_WAIT socket)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.ends: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                self.ends.append("fin" if conn.recv(1) == b"" else "data")
            except ConnectionResetError:
                self.ends.append("reset")
            except TimeoutError:
                self.ends.append("open")
            finally:
                conn.close()

    def wait_ends(self, n: int, timeout_s: float = 10.0) -> list[str]:
        """The first ``n`` ends, once the server thread has taken that many connections off its
        queue (it serves one at a time: on a busy machine it lags behind the prober)."""
        deadline = time.monotonic() + timeout_s
        while len(self.ends) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ends[:n] if len(self.ends) >= n else list(self.ends)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


async def test_tcp_connects_reuse_sockets_and_reset_every_connection() -> None:
    a, b = ClosingServer(), ClosingServer()
    try:
        for _ in range(5):
            for server in (a, b):
                assert (await probe(server.port, TcpSpec(T)))[0] is ProbeResult.OK
        # a reused socket reports a refusal like a fresh one
        assert (await probe(free_port(), TcpSpec(T)))[0] is ProbeResult.REFUSED
        assert (await probe(a.port, TcpSpec(T)))[0] is ProbeResult.OK
        ends = await asyncio.to_thread(a.wait_ends, 6), await asyncio.to_thread(b.wait_ends, 5)
    finally:
        a.close()
        b.close()
    assert ends == (["reset"] * 6, ["reset"] * 5), ends
    idle = [r._idle[socket.AF_INET] for r in vgw.probes._reactors.values()]
    assert any(idle), "connected sockets are kept for the next connect"


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


class ResettingServer:
    """A server in its own thread that resets each connection it accepts when told to (``go``),
    whatever the client's event loop is doing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)  # to see ``stop`` (closing the socket does not wake a blocked accept)
        self.port = self.sock.getsockname()[1]
        self.go = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.go.wait(5)
            self.go.clear()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("spec", [HttpSpec(T), TcpSendExpectSpec(T, b"PING\n", b"PONG")], ids=["http", "send_expect"])
async def test_reset_before_the_request_is_written(spec: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reset reaches the socket after the connection is set up but before the probe writes
    (its event loop busy, as on a loaded machine): the write fails, and asyncio reports that as
    ConnectionResetError("Connection lost") without an errno. Still a reset, not an "error"."""
    server = ResettingServer()
    real_open = vgw.probes._open_stream

    async def open_then_reset(*args: Any, **kwargs: Any) -> Any:
        reader, writer = await real_open(*args, **kwargs)
        server.go.set()
        # Without yielding to the event loop: block until the reset is in the socket.
        readable, _, _ = select.select([writer.get_extra_info("socket")], [], [], 5)
        assert readable, "the server did not reset the connection"
        return reader, writer

    monkeypatch.setattr(vgw.probes, "_open_stream", open_then_reset)
    try:
        for _ in range(3):
            assert await probe(server.port, spec) == (ProbeResult.RESET, "connection reset")
    finally:
        server.close()


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
