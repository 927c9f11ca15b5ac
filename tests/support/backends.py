"""Real backend servers on loopback for health-check tests: TCP with several behaviours, UDP
echo, HTTP(S) and gRPC health. Each counts the connections it accepted."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_RST = struct.pack("ii", 1, 0)


class TcpBackend:
    """modes: accept (accept, then close after the peer does), expect (reply PONG to PING),
    wrong (reply NOPE), hang (accept, never answer), reset (accept and reset), garbage (junk)."""

    def __init__(self, mode: str = "accept") -> None:
        self.mode = mode
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> TcpBackend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "reset":
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                writer.transport.abort()
                return
            if self.mode == "garbage":
                writer.write(b"\x00\xffgarbage\r\n\r\n\x01")
                await writer.drain()
            elif self.mode in ("expect", "wrong"):
                data = await reader.read(100)
                if data.startswith(b"PING"):
                    writer.write(b"PONG\n" if self.mode == "expect" else b"NOPE\n")
                    await writer.drain()
            elif self.mode == "hang":
                await asyncio.sleep(30)
            await reader.read(100)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()


class UdpBackend(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes | None = b"PONG") -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> UdpBackend:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.reply is not None and self.transport is not None:
            self.transport.sendto(self.reply, addr)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner: HttpBackend = self.server.owner  # type: ignore[attr-defined]
        owner.requests.append((self.path, self.headers.get("Host", "")))
        status = owner.status
        body = owner.body
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def self_signed_cert(directory: Path, name: str = "backend.test") -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class HttpBackend:
    def __init__(self, status: int = 200, body: bytes = b"healthy", tls: tuple[Path, Path] | None = None) -> None:
        self.status = status
        self.body = body
        self.requests: list[tuple[str, str]] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> HttpBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class GrpcBackend:
    def __init__(self) -> None:
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else None
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> GrpcBackend:
        from grpc_health.v1._async import HealthServicer

        self.health = HealthServicer()
        self.server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port or self.port}")
        await self.server.start()
        return self

    async def set(self, service: str, serving: bool) -> None:
        assert self.health is not None
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(service, status)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
