"""The forwarding gap, measured from outside: N UDP flows to the VIP's DNS service (the backends'
responder returns every datagram), one datagram per flow every ``--interval-ms``. A flow that the
router's ECMP sends through a restarting forwarder gets no answers for as long as that forwarder
does not forward; the largest interval between two answers on one flow is that flow's gap. TCP
cannot measure this: a connection's retransmissions back off (200 ms, then 600 ms, 1.4 s after the
first loss), so what a TCP client sees is the gap rounded up to its next retransmission.

Run in the client namespace (``python -m deploy.lab.udpprobe ...``) by the long-lived scenarios;
stdlib only. It stops by itself after ``--duration`` seconds, or on SIGTERM, and prints one JSON
line: ``{"event": "done", "flows": [{"sport", "sent", "answered", "max_gap_ms", "gaps"}, ...]}``,
``gaps`` being the intervals of at least ``--gap-log-ms`` as wall-clock ``[start, end]`` (a flow
without answers at the end has its last gap end there).
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

# A DNS-shaped query header (the responder rewrites bytes 2-3 and returns the rest): id, flags,
# then the flow's index and a sequence number where a question would be.
_QUERY = struct.Struct("!HHII")


@dataclass
class Flow:
    index: int
    sock: socket.socket
    sport: int
    sent: int = 0
    answered: int = 0
    last_answer: float = 0.0  # monotonic; 0 until the first answer
    max_gap_s: float = 0.0
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def record(self, wall_offset: float) -> dict[str, Any]:
        return {"sport": self.sport, "sent": self.sent, "answered": self.answered,
                "max_gap_ms": round(self.max_gap_s * 1000, 1),
                "gaps": [[round(a + wall_offset, 3), round(b + wall_offset, 3)] for a, b in self.gaps]}  # fmt: skip


def run(a: argparse.Namespace) -> dict[str, Any]:
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    wall_offset = time.time() - time.monotonic()
    sel = selectors.DefaultSelector()
    flows: list[Flow] = []
    for i in range(a.flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((a.vip, a.port))  # an ephemeral source port per flow: ECMP spreads them
        flows.append(Flow(i, s, s.getsockname()[1]))
        sel.register(s, selectors.EVENT_READ, flows[-1])
    step = a.interval_ms / 1000
    end = time.monotonic() + a.duration
    next_send = time.monotonic()
    while not stop and time.monotonic() < end:
        now = time.monotonic()
        if now >= next_send:
            for f in flows:
                try:
                    f.sock.send(_QUERY.pack(0x5647, 0x0100, f.index, f.sent))
                    f.sent += 1
                except OSError:
                    pass  # no route for a moment: the missing answers show it
            next_send = max(next_send + step, now)
        for key, _mask in sel.select(max(0.0, next_send - time.monotonic())):
            f = key.data
            while True:
                try:
                    data = f.sock.recv(512)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # an ICMP error for an earlier datagram: a loss like any other
                if len(data) < _QUERY.size:
                    continue
                t = time.monotonic()
                if f.last_answer:
                    gap = t - f.last_answer
                    f.max_gap_s = max(f.max_gap_s, gap)
                    if gap * 1000 >= a.gap_log_ms and len(f.gaps) < 20:
                        f.gaps.append((f.last_answer, t))
                f.last_answer = t
                f.answered += 1
    t = time.monotonic()
    for f in flows:
        f.sock.close()
        if f.last_answer and (t - f.last_answer) * 1000 >= a.gap_log_ms and len(f.gaps) < 20:
            f.gaps.append((f.last_answer, t))  # still no answer: a gap at least this long
            f.max_gap_s = max(f.max_gap_s, t - f.last_answer)
    return {"event": "done", "t": round(time.time(), 3), "interval_ms": a.interval_ms,
            "flows": [f.record(wall_offset) for f in flows]}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--flows", type=int, default=32)
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=60.0, help="hard bound: stop after this many seconds")
    p.add_argument("--gap-log-ms", type=float, default=50.0)
    a = p.parse_args(argv)
    if not 1 <= a.flows <= 1024 or not 1 <= a.interval_ms <= 1000 or not 0 < a.duration <= 3600:
        p.error("--flows 1-1024, --interval-ms 1-1000, --duration up to 3600 s")
    return a


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parse(argv))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
