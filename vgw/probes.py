"""Probes: one attempt of one check against one backend, with a classified outcome.

Every probe is bounded by its timeout and never raises: whatever the backend does (refuse, reset,
hang, answer garbage, fail TLS), the outcome says what happened in a ``ProbeResult`` and a short
human detail. TCP connects are made on raw non-blocking sockets and ended with a reset (a close
with SO_LINGER 0, or a disconnect that keeps the socket for the next connect), because at
thousands of backends per second a graceful close would leave a TIME_WAIT socket per probe and
exhaust local ports (HAProxy does the same).
"""

from __future__ import annotations

import _socket as _csocket
import asyncio
import collections
import contextlib
import ctypes
import errno
import logging
import os
import select
import socket
import ssl
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import grpc
import h11
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vgw.events import ProbeResult
from vgw.netns import socket_in

log = logging.getLogger("vgw.probes")

MAX_READ = 64 * 1024  # bytes read looking for an expected reply or body match
USER_AGENT = "vgw-healthcheck/1"
_LINGER_RST = struct.pack("ii", 1, 0)
_EPOLL_TROUBLE = select.EPOLLERR | select.EPOLLHUP
_EPOLL_ONCE = select.EPOLLOUT | select.EPOLLONESHOT


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    port: int
    mark: int | None = None
    """Routing mark (SO_MARK) for every socket of the probe; None for the normal routing table."""
    netns: str | None = None
    """Network namespace to probe from (see :mod:`vgw.netns`); None for the process's own."""
    family: int = field(init=False)
    sockaddr: tuple[str, int] = field(init=False)

    def __post_init__(self) -> None:
        # Parsed once: at thousands of probes per second, re-parsing the address shows in profiles.
        family = socket.AF_INET6 if ip_address(self.address).version == 6 else socket.AF_INET
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "sockaddr", (self.address, self.port))

    @property
    def hostport(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ProbeResult
    detail: str = ""
    latency_ms: float | None = None
    local: bool = False
    """The probe could not run for a reason of ours (e.g. out of file descriptors): not evidence
    about the backend, so it must not count towards rise or fall."""

    @property
    def ok(self) -> bool:
        return self.result is ProbeResult.OK


Done = Callable[[Outcome], None]


@dataclass(frozen=True, slots=True)
class TcpSpec:
    timeout_s: float


@dataclass(frozen=True, slots=True)
class TcpSendExpectSpec:
    timeout_s: float
    send: bytes
    expect: bytes


@dataclass(frozen=True, slots=True)
class UdpSpec:
    """With ``expect``, a reply starting with it is required; without, silence passes and only an ICMP
    port unreachable (or another socket error) fails, as LVS/keepalived treat UDP."""

    timeout_s: float
    send: bytes
    expect: bytes | None = None


@dataclass(frozen=True, slots=True)
class HttpSpec:
    timeout_s: float
    tls: bool = False
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    """Host header and TLS SNI; the backend address when unset."""
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)
    body_contains: bytes | None = None
    tls_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcSpec:
    """gRPC health v1. With ``tls`` the server certificate is always verified (grpcio offers no way
    to skip it); ``authority`` overrides the name checked and sent as :authority."""

    timeout_s: float
    service: str = ""
    tls: bool = False
    authority: str | None = None


Spec = TcpSpec | TcpSendExpectSpec | UdpSpec | HttpSpec | GrpcSpec


_LOCAL_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL)


def _classify_os_error(exc: OSError) -> Outcome:
    code = exc.errno
    if code in _LOCAL_ERRNOS:
        # Our own shortage (file descriptors, buffers, local ports) says nothing about the backend.
        return Outcome(ProbeResult.ERROR, f"local: {exc.strerror or exc}", local=True)
    # By class as well as by errno: asyncio raises some without an errno. When a reset arrives
    # before our request is written, the send fails and StreamWriter.drain() reports it as
    # ConnectionResetError("Connection lost"), errno None.
    if code == errno.ECONNREFUSED or isinstance(exc, ConnectionRefusedError):
        return Outcome(ProbeResult.REFUSED, "connection refused")
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED) or isinstance(
        exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError
    ):
        return Outcome(ProbeResult.RESET, "connection reset")
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN):
        return Outcome(ProbeResult.UNREACHABLE, exc.strerror or "unreachable")
    if code == errno.ETIMEDOUT:
        return Outcome(ProbeResult.TIMEOUT, "connect timed out")
    return Outcome(ProbeResult.ERROR, exc.strerror or str(exc))


def _deliver(done: Done, outcome: Outcome) -> None:
    """Hand an outcome over; a failing callback must not stop the reactor (its timer, its loop)."""
    try:
        done(outcome)
    except Exception:  # e.g. the awaiting task was cancelled: the outcome has no taker
        log.debug("probe outcome dropped", exc_info=True)


_libc = ctypes.CDLL(None, use_errno=True)
_libc_connect = _libc.connect
_libc_connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc_connect.restype = ctypes.c_int
_AF_UNSPEC_ADDR = struct.pack("=H14x", socket.AF_UNSPEC)  # a struct sockaddr of family AF_UNSPEC
_IDLE_MAX = 1024  # disconnected sockets kept per address family for the next connects
_NOT_RECONNECTABLE = (errno.EISCONN, errno.EALREADY, errno.EINVAL, errno.EBADF)


def _disconnect(sock: _csocket.socket) -> bool:
    """Reset a connected TCP socket and make it connectable again: connect() to AF_UNSPEC (Linux
    tcp_disconnect) sends the same RST as close() with SO_LINGER 0 and leaves no TIME_WAIT, but keeps
    the socket, its file and its epoll registration. Python's connect() cannot express AF_UNSPEC."""
    return bool(_libc_connect(sock.fileno(), _AF_UNSPEC_ADDR, len(_AF_UNSPEC_ADDR)) == 0)


class _Connect:
    __slots__ = ("deadline", "done", "fd", "reusable", "sock", "start", "timeout_s")

    def __init__(self, sock: _csocket.socket, start: float, timeout_s: float, done: Done, reusable: bool) -> None:
        self.sock: _csocket.socket | None = sock
        self.fd, self.start, self.timeout_s, self.done = sock.fileno(), start, timeout_s, done
        self.deadline = start + timeout_s
        self.reusable = reusable


class ConnectReactor:
    """Non-blocking TCP connects watched by one epoll set of our own, registered once with the
    event loop, with timeouts in one queue per timeout value under one loop timer.

    The plain connect check is what runs at 10,000 backends per instance. Going through
    ``loop.add_writer`` and ``call_later`` costs a selector key, two handles and four dict and heap
    operations per probe; here a probe is one ``epoll_ctl``, one dict entry and one append. Connects with
    the same timeout expire in the order they started, so each timeout value has a FIFO queue, not a
    heap: a finished connect is only marked (its ``sock`` set to None) and dropped from the head.

    A socket whose connect succeeded is reset by a disconnect (:func:`_disconnect`) rather than
    closed, and kept for a next connect: that saves the socket(), setsockopt(), close() and epoll
    add/remove of a fresh socket per probe, about a fifth of the kernel time of a probe on the
    benchmark machine. Sockets are registered one-shot (a disconnected socket would report itself
    ready forever) and re-armed per connect. Failed, timed-out, marked or namespaced connects use
    a fresh socket that is closed (with a reset) after.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The reactor is the value of a WeakKeyDictionary keyed by the loop: a strong reference
        # back to the loop would keep both alive forever.
        self._loop_ref = weakref.ref(loop)
        self._epoll = select.epoll()
        self._pending: dict[int, _Connect] = {}
        self._queues: dict[float, collections.deque[_Connect]] = {}
        self._idle: dict[int, list[_csocket.socket]] = {socket.AF_INET: [], socket.AF_INET6: []}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        loop.add_reader(self._epoll.fileno(), self._ready)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref()
        assert loop is not None, "the event loop of this reactor is gone"
        return loop

    def start(self, target: Target, timeout_s: float, done: Done) -> None:
        start = time.perf_counter()
        reusable = target.netns is None and target.mark is None
        idle = self._idle[target.family] if reusable else None
        if idle:
            sock, fresh = idle.pop(), False
        else:
            try:
                sock, fresh = _socket_fast(target), True
            except OSError as exc:
                self._loop.call_soon(done, _classify_os_error(exc))
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        rc = sock.connect_ex(target.sockaddr)
        if rc in _NOT_RECONNECTABLE and not fresh:
            # Not the backend's answer: this kept socket cannot connect again. Use a fresh one.
            sock.close()
            self.start(target, timeout_s, done)
            return
        if rc != errno.EINPROGRESS:
            sock.close()
            ok = Outcome(ProbeResult.OK, "connected", (time.perf_counter() - start) * 1000)
            self._loop.call_soon(done, ok if rc == 0 else _classify_os_error(OSError(rc, os.strerror(rc))))
            return
        c = _Connect(sock, start, timeout_s, done, reusable)
        self._pending[c.fd] = c
        if fresh:
            self._epoll.register(c.fd, _EPOLL_ONCE)
        else:
            self._epoll.modify(c.fd, _EPOLL_ONCE)  # still registered: it was never closed
        queue = self._queues.get(timeout_s)
        if queue is None:
            queue = self._queues[timeout_s] = collections.deque()
        queue.append(c)
        if len(queue) == 1:
            self._arm(c.deadline)

    def _ready(self) -> None:
        pending = self._pending
        for fd, events in self._epoll.poll(0, 4096):
            c = pending.pop(fd, None)
            if c is None or c.sock is None:
                continue
            sock, c.sock = c.sock, None
            # Writable without error or hang-up: connected, no need to ask (one syscall less per probe).
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & _EPOLL_TROUBLE else 0
            if err == 0 and c.reusable and len(idle := self._idle[sock.family]) < _IDLE_MAX and _disconnect(sock):
                idle.append(sock)  # reset sent, ready for another connect
            else:
                sock.close()  # SO_LINGER 0: a reset, no TIME_WAIT; also leaves the epoll set
            # Connects mostly finish in the order they started: drop finished ones from the head of
            # their queue now, so they die young instead of living a timeout into older GC generations.
            queue = self._queues[c.timeout_s]
            while queue and queue[0].sock is None:
                queue.popleft()
            if err:
                _deliver(c.done, _classify_os_error(OSError(err, os.strerror(err))))
            else:
                _deliver(c.done, Outcome(ProbeResult.OK, "connected", (time.perf_counter() - c.start) * 1000))

    def _arm(self, at: float) -> None:
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        # From perf_counter, our clock for deadlines: the loop's clock may be another one.
        self._timer = self._loop.call_later(max(0.0, at - time.perf_counter()), self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        now = time.perf_counter()
        pending = self._pending
        for queue in self._queues.values():
            while queue:
                c = queue[0]
                if c.sock is not None:
                    if c.deadline > now:
                        self._arm(c.deadline)
                        break
                    sock, c.sock = c.sock, None
                    if pending.get(c.fd) is c:
                        del pending[c.fd]
                    sock.close()
                    _deliver(c.done, Outcome(ProbeResult.TIMEOUT, f"no connect in {c.timeout_s:g}s"))
                queue.popleft()  # timed out now, or finished earlier

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        if self._timer is not None:
            self._timer.cancel()
        for c in self._pending.values():
            if c.sock is not None:
                c.sock.close()
                c.sock = None
        self._pending.clear()
        for idle in self._idle.values():
            for sock in idle:
                sock.close()
            idle.clear()
        self._queues.clear()
        self._epoll.close()


# One reactor per event loop; weak so a finished loop (tests run many) takes its reactor along.
_reactors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectReactor] = weakref.WeakKeyDictionary()


def start_tcp(target: Target, spec: TcpSpec, done: Done) -> None:
    """Start a callback-driven TCP connect probe; ``done`` is called exactly once."""
    loop = asyncio.get_running_loop()
    reactor = _reactors.get(loop)
    if reactor is None:
        reactor = _reactors[loop] = ConnectReactor(loop)
    reactor.start(target, spec.timeout_s, done)


async def probe_tcp(target: Target, spec: TcpSpec) -> Outcome:
    """The awaitable form of :func:`start_tcp`."""
    done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def settle(o: Outcome) -> None:
        if not done.done():  # cancelled while connecting: nobody waits any more
            done.set_result(o)

    start_tcp(target, spec, settle)
    return await done


def _socket_fast(target: Target) -> _csocket.socket:
    """A non-blocking TCP socket for the connect reactor. Without a namespace it is the C-level
    socket, not the ``socket.socket`` wrapper: its Python ``__init__`` and ``close`` showed in
    profiles at 10,000 probes a second, and the reactor needs nothing of the wrapper."""
    if target.netns is not None or target.mark is not None:
        return _socket(target, socket.SOCK_STREAM)
    return _csocket.socket(target.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)


def _socket(target: Target, kind: int) -> socket.socket:
    """A non-blocking socket for ``target``, marked when the target asks for a routing mark."""
    kind |= socket.SOCK_NONBLOCK
    sock = socket.socket(target.family, kind) if target.netns is None else socket_in(target.netns, target.family, kind)
    try:
        if target.mark is not None:
            # SO_MARK selects a policy-routing table: how the monitor steers a probe through one node.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, target.mark)
    except OSError:
        sock.close()
        raise
    return sock


async def _open_stream(
    target: Target, ssl_ctx: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = _socket(target, socket.SOCK_STREAM)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (target.address, target.port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, ssl=ssl_ctx, server_hostname=server_hostname)


async def _read_prefix(reader: asyncio.StreamReader, prefix: bytes, buf: bytearray) -> bool:
    """Read into ``buf`` until it holds ``len(prefix)`` bytes: True if the reply starts with
    ``prefix``, False as soon as it cannot (or on EOF)."""
    while len(buf) < len(prefix):
        chunk = await reader.read(4096)
        if not chunk:
            return False
        buf += chunk
        if not prefix.startswith(bytes(buf[: len(prefix)])):
            return False
    return bytes(buf[: len(prefix)]) == prefix


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


async def probe_tcp_send_expect(target: Target, spec: TcpSendExpectSpec) -> Outcome:
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    got = bytearray()
    try:
        async with asyncio.timeout(spec.timeout_s):
            reader, writer = await _open_stream(target)
            if spec.send:
                writer.write(spec.send)
                await writer.drain()
            found = await _read_prefix(reader, spec.expect, got)
    except TimeoutError:
        if got:  # it answered, just not what we expect
            return Outcome(ProbeResult.EXPECT_MISMATCH, f"got {bytes(got[:40])!r}, want {spec.expect[:40]!r}")
        return Outcome(ProbeResult.TIMEOUT, f"no reply in {spec.timeout_s:g}s")
    except OSError as exc:
        return _classify_os_error(exc)
    finally:
        if writer is not None:
            _abort(writer)
    if not found:
        return Outcome(ProbeResult.EXPECT_MISMATCH, f"got {bytes(got[:40])!r}, want {spec.expect[:40]!r}")
    return Outcome(ProbeResult.OK, "expected reply", (time.perf_counter() - start) * 1000)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable arrives here as ConnectionRefusedError on a connected socket.
        self.replies.put_nowait(exc if isinstance(exc, OSError) else OSError(str(exc)))


async def probe_udp(target: Target, spec: UdpSpec) -> Outcome:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    transport: asyncio.DatagramTransport | None = None
    try:
        sock = _socket(target, socket.SOCK_DGRAM)
        try:
            sock.connect((target.address, target.port))
        except BaseException:
            sock.close()
            raise
        transport, proto = await loop.create_datagram_endpoint(_UdpProtocol, sock=sock)
        transport.sendto(spec.send)
        deadline = start + spec.timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError
            reply = await asyncio.wait_for(proto.replies.get(), remaining)
            if isinstance(reply, OSError):
                if isinstance(reply, ConnectionRefusedError):
                    return Outcome(ProbeResult.REFUSED, "ICMP port unreachable")
                return _classify_os_error(reply)
            if spec.expect is None or reply.startswith(spec.expect):
                return Outcome(ProbeResult.OK, "reply", (time.perf_counter() - start) * 1000)
            return Outcome(ProbeResult.EXPECT_MISMATCH, f"reply did not contain {spec.expect[:40]!r}")
    except TimeoutError:
        if spec.expect is None:
            return Outcome(ProbeResult.OK, "no reply and no ICMP error", (time.perf_counter() - start) * 1000)
        return Outcome(ProbeResult.TIMEOUT, f"no reply in {spec.timeout_s:g}s")
    except OSError as exc:
        return _classify_os_error(exc)
    finally:
        if transport is not None:
            transport.close()


def _status_ok(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)


def _tls_context(spec: HttpSpec) -> ssl.SSLContext | None:
    if not spec.tls:
        return None
    ctx = ssl.create_default_context()
    if not spec.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request(target: Target, spec: HttpSpec, host: str) -> h11.Request:
    host_header = f"[{host}]" if _is_ip(host) and ":" in host else host
    if target.port not in (80, 443):
        host_header = f"{host_header}:{target.port}"
    headers = [("Host", host_header), ("User-Agent", USER_AGENT), ("Connection", "close"), *spec.headers]
    return h11.Request(method=spec.method, target=spec.path, headers=headers)


async def _read_response(reader: asyncio.StreamReader, conn: h11.Connection, spec: HttpSpec) -> tuple[int, bytes]:
    """Status and as much body as the check needs (none unless it matches on the body)."""
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(8192))
        elif isinstance(event, h11.Response):
            status = event.status_code
            if spec.body_contains is None or not _status_ok(status, spec.expect_status):
                return status, body
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
            if (spec.body_contains is not None and spec.body_contains in body) or len(body) >= MAX_READ:
                return status, body
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, body


async def probe_http(target: Target, spec: HttpSpec) -> Outcome:
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    host = spec.host or target.address
    try:
        async with asyncio.timeout(spec.timeout_s):
            ctx = _tls_context(spec)
            # SNI only for names, as RFC 6066 says.
            sni = ("" if _is_ip(host) else host) if ctx is not None else None
            reader, writer = await _open_stream(target, ctx, sni)
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_READ)
            writer.write(conn.send(_request(target, spec, host)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            status, body = await _read_response(reader, conn, spec)
    except TimeoutError:
        return Outcome(ProbeResult.TIMEOUT, f"no HTTP response in {spec.timeout_s:g}s")
    except ssl.SSLError as exc:
        return Outcome(ProbeResult.TLS_ERROR, (exc.reason or str(exc))[:200])
    except h11.RemoteProtocolError as exc:
        return Outcome(ProbeResult.PROTOCOL_ERROR, f"not HTTP: {exc}"[:200])
    except OSError as exc:
        return _classify_os_error(exc)
    finally:
        if writer is not None:
            _abort(writer)
    latency = (time.perf_counter() - start) * 1000
    if not _status_ok(status, spec.expect_status):
        return Outcome(ProbeResult.STATUS, f"HTTP {status}", latency)
    if spec.body_contains is not None and spec.body_contains not in body:
        return Outcome(ProbeResult.BODY_MISMATCH, f"HTTP {status}: body lacks {spec.body_contains[:40]!r}", latency)
    return Outcome(ProbeResult.OK, f"HTTP {status}", latency)


def _is_ip(host: str) -> bool:
    try:
        ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass
class GrpcProber:
    """gRPC health v1 keeps one channel per backend across probes, like a real gRPC client would."""

    target: Target
    spec: GrpcSpec
    _channel: grpc.aio.Channel | None = field(default=None, init=False)

    async def probe(self) -> Outcome:
        if self._channel is None:
            options: list[tuple[str, str | int]] = [
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", 100),
            ]
            if self.spec.authority:
                options.append(("grpc.default_authority", self.spec.authority))
            if self.spec.tls:
                if self.spec.authority:
                    options.append(("grpc.ssl_target_name_override", self.spec.authority))
                creds = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self.target.hostport, creds, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target.hostport, options=options)
        stub: Any = health_pb2_grpc.HealthStub(self._channel)  # generated stubs are untyped
        start = time.perf_counter()
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=self.spec.service), timeout=self.spec.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            detail = f"{code.name}: {(exc.details() or '')[:150]}"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome(ProbeResult.TIMEOUT, detail)
            if code == grpc.StatusCode.UNAVAILABLE:
                return Outcome(ProbeResult.REFUSED if "refused" in detail.lower() else ProbeResult.UNREACHABLE, detail)
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return Outcome(ProbeResult.NOT_SERVING, detail)
            return Outcome(ProbeResult.PROTOCOL_ERROR, detail)
        latency = (time.perf_counter() - start) * 1000
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return Outcome(ProbeResult.OK, status, latency)
        return Outcome(ProbeResult.NOT_SERVING, status, latency)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class Prober:
    """Runs one check against one backend; holds per-backend resources (gRPC channels)."""

    def __init__(self, target: Target, spec: Spec) -> None:
        self.target = target
        self.spec = spec
        self._grpc = GrpcProber(target, spec) if isinstance(spec, GrpcSpec) else None

    async def probe(self) -> Outcome:
        spec = self.spec
        try:
            if self._grpc is not None:
                return await self._grpc.probe()
            if isinstance(spec, TcpSpec):
                return await probe_tcp(self.target, spec)
            if isinstance(spec, TcpSendExpectSpec):
                return await probe_tcp_send_expect(self.target, spec)
            if isinstance(spec, UdpSpec):
                return await probe_udp(self.target, spec)
            if isinstance(spec, HttpSpec):
                return await probe_http(self.target, spec)
        except Exception as exc:  # a probe must classify, never raise
            return Outcome(ProbeResult.ERROR, f"{type(exc).__name__}: {exc}"[:200])
        return Outcome(ProbeResult.ERROR, f"unsupported check {type(spec).__name__}")

    @property
    def callback_driven(self) -> bool:
        return isinstance(self.spec, TcpSpec)

    @property
    def holds_resources(self) -> bool:
        """Whether :meth:`close` has anything to release (a gRPC channel)."""
        return self._grpc is not None

    def start(self, done: Done) -> None:
        """Run a callback-driven probe (see :func:`start_tcp`); only when ``callback_driven``."""
        assert isinstance(self.spec, TcpSpec)
        start_tcp(self.target, self.spec, done)

    async def close(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()
