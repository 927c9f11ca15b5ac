"""Long-lived connections through the VIP: N persistent TCP connections to the backends' streaming
echo (servers.py, port 9000), each sending a pattern in small writes and checking every byte that
comes back. Run in the client namespace (``python -m deploy.lab.echoclient ...``) by the long-lived
scenarios (longlived.py); stdlib only, one thread, epoll.

Output, JSON lines on stdout:

- ``{"event": "ready", ...}`` once every connection is open (banner read) or failed to open;
- ``{"event": "tick", ...}`` every 0.5 s: connections alive, broken, stalled now, the longest
  current stall;
- at the end, one ``{"event": "conn", ...}`` per connection (broken or not, the reason, its largest
  gap between echoes and the gaps above ``--gap-log-ms`` with their times, its backend and LIP),
  then ``{"event": "done", ...}``.

A connection is broken when it is reset, reaches EOF, errs, returns a byte that differs from what
was sent (``corrupt``), or has echoes outstanding and none arrives for ``--stall-timeout`` seconds
(``timeout``). It stops by itself after ``--duration`` seconds, or on SIGTERM/SIGINT: it stops
writing, waits up to 2 s for the outstanding echoes, and reports. The banner each connection gets
first (``vgw-echo <backend> <LIP>:<port>``, the address the backend sees) names the node that
carries it: FULLNAT's source address is a LIP of that node.
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

PERIOD = 65521  # a prime: a shifted or repeated stream mismatches within one period
_BLOCK = random.Random(20261201).randbytes(PERIOD)
PATTERN = _BLOCK + _BLOCK  # slices of up to PERIOD bytes without wrapping
RECV_MAX = 16384
OUTSTANDING_MAX = 32768  # stop writing while this much is unechoed (a stalled path)
BANNER_MAX = 256


def expected(seed: int, offset: int, length: int) -> bytes:
    start = (seed + offset) % PERIOD
    return PATTERN[start : start + length]


@dataclass
class Conn:
    id: int
    sock: socket.socket
    seed: int
    opened_at: float = 0.0  # wall clock, when the banner arrived
    state: str = "connecting"  # connecting | banner | open | broken | closed
    sport: int = 0
    banner: bytes = b""
    backend: str = ""
    lip: str = ""
    sent: int = 0  # bytes handed to the kernel
    echoed: int = 0  # bytes received back and verified
    pending: bytes = b""  # generated but not yet accepted by the kernel
    next_send: float = 0.0  # monotonic
    last_rx: float = 0.0  # monotonic: the last echo (or the banner)
    max_gap_s: float = 0.0
    max_gap_end: float = 0.0  # wall clock
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, end) wall clock, > gap_log
    reason: str = ""
    broken_at: float = 0.0

    def record(self) -> dict[str, Any]:
        return {
            "event": "conn", "id": self.id, "sport": self.sport, "backend": self.backend, "lip": self.lip,
            "opened": self.state != "failed_open", "broken": self.state in ("broken", "failed_open"),
            "reason": self.reason, "broken_at": round(self.broken_at, 3) if self.broken_at else None,
            "sent": self.sent + len(self.pending), "echoed": self.echoed,
            "max_gap_ms": round(self.max_gap_s * 1000, 1), "max_gap_end": round(self.max_gap_end, 3),
            "gaps": [[round(a, 3), round(b, 3)] for a, b in self.gaps[:20]],
        }  # fmt: skip


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.stop = False
        self.wall0 = time.time()
        self.mono0 = time.monotonic()

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)

    def emit(self, rec: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()

    # -- the connections' life ------------------------------------------------------------------

    def open_all(self) -> None:
        gap = self.a.ramp_s / max(1, self.a.conns)
        for i in range(self.a.conns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            c = Conn(i, s, seed=(i * 7919) % PERIOD)
            self.conns.append(c)
            err = s.connect_ex((self.a.vip, self.a.port))
            if err not in (0, errno.EINPROGRESS):
                self.fail(c, f"connect: {errno.errorcode.get(err, err)}", opening=True)
                continue
            c.sport = s.getsockname()[1]
            self.sel.register(s, selectors.EVENT_WRITE, c)
            self.poll(gap)  # pace the SYNs, and take what is ready meanwhile
        deadline = time.monotonic() + self.a.open_timeout
        while any(c.state in ("connecting", "banner") for c in self.conns) and not self.stop:
            if time.monotonic() > deadline:
                for c in self.conns:
                    if c.state in ("connecting", "banner"):
                        self.fail(c, f"open timeout ({c.state})", opening=True)
                break
            self.poll(0.05)
        opened = [c for c in self.conns if c.state == "open"]
        lips: dict[str, int] = {}
        for c in opened:
            lips[c.lip] = lips.get(c.lip, 0) + 1
        backends: dict[str, int] = {}
        for c in opened:
            backends[c.backend] = backends.get(c.backend, 0) + 1
        self.emit({"event": "ready", "t": round(time.time(), 3), "opened": len(opened),
                   "failed_open": len(self.conns) - len(opened), "lips": dict(sorted(lips.items())),
                   "backends": dict(sorted(backends.items())),
                   "errors": sorted({c.reason for c in self.conns if c.state == "failed_open"})[:5]})  # fmt: skip

    def fail(self, c: Conn, reason: str, opening: bool = False) -> None:
        if c.state in ("broken", "failed_open", "closed"):
            return
        c.state = "failed_open" if opening else "broken"
        c.reason = reason
        c.broken_at = time.time()
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def on_event(self, c: Conn, mask: int) -> None:
        if c.state == "connecting":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, f"connect: {errno.errorcode.get(err, err)}", opening=True)
                return
            c.state = "banner"
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            return
        if mask & selectors.EVENT_READ:
            self.read(c)
        if mask & selectors.EVENT_WRITE and c.state == "open":
            self.flush(c)

    def read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(RECV_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.fail(c, "reset", opening=c.state == "banner")
            return
        except OSError as exc:
            self.fail(c, f"error: {errno.errorcode.get(exc.errno or 0, exc)}", opening=c.state == "banner")
            return
        if not data:
            self.fail(c, "eof (closed by the peer)", opening=c.state == "banner")
            return
        now = time.monotonic()
        if c.state == "banner":
            c.banner += data
            if b"\n" not in c.banner:
                if len(c.banner) > BANNER_MAX:
                    self.fail(c, "bad banner", opening=True)
                return
            line, _, rest = c.banner.partition(b"\n")
            parts = line.decode(errors="replace").split()
            if len(parts) < 3 or parts[0] != "vgw-echo" or rest:
                self.fail(c, f"bad banner {line[:60]!r}", opening=True)
                return
            c.backend, c.lip = parts[1], parts[2].rsplit(":", 1)[0]
            c.state, c.last_rx, c.opened_at = "open", now, time.time()
            c.next_send = now + random.random() * self.a.interval_ms / 1000  # spread the writes
            return
        want = expected(c.seed, c.echoed, len(data))
        if data != want:
            at = next(i for i, (x, y) in enumerate(zip(data, want, strict=True)) if x != y)
            self.fail(c, f"corrupt: byte {c.echoed + at} is {data[at]:#04x}, sent {want[at]:#04x}")
            return
        if c.echoed + len(data) > c.sent:
            self.fail(c, "corrupt: more bytes came back than were sent")
            return
        c.echoed += len(data)
        gap = now - c.last_rx
        if gap > c.max_gap_s:
            c.max_gap_s, c.max_gap_end = gap, self.wall(now)
        if gap * 1000 >= self.a.gap_log_ms and len(c.gaps) < 20:
            c.gaps.append((self.wall(c.last_rx), self.wall(now)))
        c.last_rx = now

    def flush(self, c: Conn) -> None:
        try:
            n = c.sock.send(c.pending)
        except (BlockingIOError, InterruptedError):
            n = 0
        except ConnectionResetError:
            self.fail(c, "reset")
            return
        except OSError as exc:
            self.fail(c, f"error: {errno.errorcode.get(exc.errno or 0, exc)}")
            return
        c.sent += n
        c.pending = c.pending[n:]
        self.sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.pending else 0), c)

    def write_due(self, now: float, writing: bool) -> None:
        step = self.a.interval_ms / 1000
        for c in self.conns:
            if c.state != "open":
                continue
            outstanding = c.sent + len(c.pending) - c.echoed
            if outstanding > 0 and now - c.last_rx > self.a.stall_timeout:
                self.fail(c, f"timeout: no echo for {self.a.stall_timeout:g} s with {outstanding} bytes outstanding")
                continue
            if not writing or now < c.next_send:
                continue
            c.next_send = max(c.next_send + step, now)
            if c.pending or outstanding > OUTSTANDING_MAX:
                continue
            if outstanding == 0:
                c.last_rx = now  # nothing owed: the time before this write is no gap
            c.pending = expected(c.seed, c.sent, self.a.chunk)
            self.flush(c)

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            self.on_event(key.data, mask)

    def tick(self, now: float) -> None:
        open_ = [c for c in self.conns if c.state == "open"]
        stalls = [now - c.last_rx for c in open_ if c.sent + len(c.pending) > c.echoed]
        self.emit({"event": "tick", "t": round(time.time(), 3), "alive": len(open_),
                   "broken": sum(c.state == "broken" for c in self.conns),
                   "stalled": sum(s > self.a.stall_report_s for s in stalls),
                   "max_stall_ms": round(1000 * max(stalls, default=0.0), 1)})  # fmt: skip

    def run(self) -> int:
        end = time.monotonic() + self.a.duration
        self.open_all()
        next_tick = time.monotonic()
        while not self.stop and time.monotonic() < end:
            now = time.monotonic()
            self.write_due(now, writing=True)
            if now >= next_tick:
                self.tick(now)
                next_tick = now + 0.5
            self.poll(0.005)
        # Stop writing; what was sent must come back (or the connection is reported stalled).
        drain_end = time.monotonic() + 2.0
        while time.monotonic() < drain_end:
            if all(c.sent + len(c.pending) == c.echoed for c in self.conns if c.state == "open"):
                break
            self.write_due(time.monotonic(), writing=False)
            self.poll(0.01)
        now = time.monotonic()
        for c in self.conns:
            if c.state == "open":
                if c.sent + len(c.pending) > c.echoed:
                    self.fail(c, f"stalled at the end: no echo for {now - c.last_rx:.1f} s")
                    continue
                c.state = "closed"
                self.sel.unregister(c.sock)
                c.sock.close()
        for c in self.conns:
            self.emit(c.record())
        reasons: dict[str, int] = {}
        for c in self.conns:
            if c.reason:
                key = c.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        self.emit({"event": "done", "t": round(time.time(), 3), "conns": len(self.conns),
                   "opened": sum(c.opened_at > 0 for c in self.conns),
                   "broken": sum(c.state == "broken" for c in self.conns), "reasons": reasons})  # fmt: skip
        return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--duration", type=float, default=60.0, help="hard bound: stop after this many seconds")
    p.add_argument("--interval-ms", type=float, default=50.0, help="one write per connection this often")
    p.add_argument("--chunk", type=int, default=64, help="bytes per write")
    p.add_argument("--ramp-s", type=float, default=1.0, help="open the connections over this time")
    p.add_argument("--open-timeout", type=float, default=10.0)
    p.add_argument("--stall-timeout", type=float, default=7.0, help="no echo for this long: broken (timeout)")
    p.add_argument("--stall-report-s", type=float, default=0.5, help="ticks count stalls longer than this")
    p.add_argument("--gap-log-ms", type=float, default=250.0, help="record gaps between echoes this long")
    a = p.parse_args(argv)
    if not (0 < a.chunk <= PERIOD and a.conns > 0 and a.interval_ms > 0):
        p.error("bad --chunk, --conns or --interval-ms")
    return a


def main(argv: list[str] | None = None) -> int:
    client = Client(parse(argv))

    def on_signal(_sig: int, _frame: object) -> None:
        client.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return client.run()


if __name__ == "__main__":
    sys.exit(main())
