"""``vgwctl node drain`` / ``vgwctl cluster drain``: follow a drain until route control reports it
complete (docs/vgwctl.md, "Draining a node").

The drain itself is state in the config (the node's ``state: draining`` and ``drain``), committed
before this module runs; route control on each node decides and records the outcome in
``vgw_routes`` (:class:`vgw.routes.DrainMark` on every VIP of the node). This module only watches:
the nodes' ``dataplane.status`` for the connection count and their ``vgw_routes`` entries for the
phase, and prints progress until every node is drained, the deadline (plus a grace) passes, or the
drain is ended by someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vgw.bus import Bus, Received
from vgw.events import DataplaneStatus, RouteState
from vgw.routes import ROUTES_BUCKET, RouteEntry
from vgw.store import KvStore

GRACE_S = 10.0
"""How long past a drain's deadline vgwctl waits for route control to report it."""
FIRST_STATUS_WAIT_S = 2.5
"""How long vgwctl waits for the nodes' first ``dataplane.status`` before its first progress line."""


@dataclass
class NodeProgress:
    node: str
    started_at: datetime
    timeout_s: float
    threshold: int
    vips: int
    connections: int | None = None
    phase: str = "draining"
    """draining, drained, ended (no longer draining: restored by someone), or unreported."""
    reason: str | None = None
    deprioritised: int = 0
    withdrawn: int = 0
    completed_at: datetime | None = None

    @property
    def deadline(self) -> datetime:
        return self.started_at + timedelta(seconds=self.timeout_s)

    @property
    def done(self) -> bool:
        return self.phase != "draining"

    def line(self, now: datetime) -> str:
        conns = "connections unknown" if self.connections is None else f"{self.connections} connections"
        if self.phase == "drained":
            took = ((self.completed_at or now) - self.started_at).total_seconds()
            return (
                f"node {self.node}: drained ({self.reason}) after {_dur(took)}: {conns}, "
                f"{self.withdrawn}/{self.vips} VIP(s) withdrawn"
            )
        if self.phase == "ended":
            return f"node {self.node}: no longer draining (restored or changed meanwhile)"
        if self.phase == "unreported":
            return (
                f"node {self.node}: route control has not reported the drain complete {GRACE_S:g}s after its "
                "deadline; is vgw-routectl running on the node? (vgwctl status)"
            )
        left = max(0.0, (self.deadline - now).total_seconds())
        return (
            f"node {self.node}: draining, {conns} (threshold {self.threshold}), {_dur(left)} left, "
            f"{self.deprioritised}/{self.vips} VIP(s) deprioritised"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "phase": self.phase,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "deadline": self.deadline.isoformat(),
            "threshold": self.threshold,
            "connections": self.connections,
            "vips": self.vips,
            "deprioritised": self.deprioritised,
            "withdrawn": self.withdrawn,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
        }


def _dur(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def update_from_routes(p: NodeProgress, entries: list[RouteEntry]) -> None:
    """The node's phase from its route entries: drained once every entry carries this drain's
    completion; ended when none carries this drain any more after route control decided again."""
    mine = [e for e in entries if e.drain is not None and e.drain.started_at == p.started_at]
    p.deprioritised = sum(1 for e in entries if e.state == RouteState.DEPRIORITISED)
    p.withdrawn = sum(1 for e in entries if e.state == RouteState.WITHDRAWN)
    if p.vips == 0:
        p.phase, p.reason = "drained", "no VIPs"
        return
    if mine and len(mine) == len(entries) and all(e.drain is not None and e.drain.completed for e in mine):
        first = mine[0].drain
        assert first is not None
        p.phase = "drained"
        p.reason = first.completed.value if first.completed is not None else None
        p.completed_at = first.completed_at
    elif entries and not mine and all(e.decided_at > p.started_at for e in entries):
        p.phase = "ended"


async def follow(
    bus: Bus,
    progress: list[NodeProgress],
    *,
    interval_s: float,
    out: Any,
    poll_s: float = 0.5,
) -> None:
    """Print progress until every node's drain is done (drained, ended or unreported)."""
    by_node = {p.node: p for p in progress}
    seen: set[str] = set()

    async def on_status(r: Received) -> None:
        ev = r.event
        if isinstance(ev, DataplaneStatus) and ev.node in by_node:
            p = by_node[ev.node]
            seen.add(ev.node)
            if ev.active_connections is None:
                p.connections = None
            else:
                p.connections = max(0, ev.active_connections - (ev.half_open_connections or 0))

    sub = await bus.subscribe(on_status, subject=f"{DataplaneStatus.subject_base()}.*")
    try:
        # The first line shows the connections: wait (briefly) for every node's first heartbeat.
        deadline = time.monotonic() + FIRST_STATUS_WAIT_S
        while time.monotonic() < deadline and not all(n in seen for n in by_node):
            await asyncio.sleep(0.05)
        routes: KvStore[RouteEntry] | None = None
        last_print = 0.0
        last_phase: dict[str, str] = {}
        while True:
            now = datetime.now(UTC)
            for p in progress:
                if p.done:
                    continue
                if routes is None:
                    # not created until a routectl has run; vgwctl may only read it (docs/security.md)
                    with contextlib.suppress(Exception):
                        routes = await KvStore.open(bus, ROUTES_BUCKET, RouteEntry, create=False)
                entries = list((await routes.snapshot(f"{p.node}.>")).values()) if routes is not None else []
                update_from_routes(p, entries)
                if not p.done and now > p.deadline + timedelta(seconds=GRACE_S):
                    p.phase = "unreported"
            changed = False
            for p in progress:
                if last_phase.get(p.node) != p.phase:
                    changed = True
                    last_phase[p.node] = p.phase
            if changed or time.monotonic() - last_print >= interval_s:
                for p in progress:
                    print(p.line(now), file=out, flush=True)
                last_print = time.monotonic()
            if all(p.done for p in progress):
                return
            await asyncio.sleep(poll_s)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def progress_stream(fmt: str) -> Any:
    """Progress lines go to stdout for people, to stderr when stdout carries JSON or YAML."""
    return sys.stdout if fmt == "table" else sys.stderr
