"""``vgwctl top``: traffic per VIP, per service and per backend -- active connections, new
connections/s, and per VIP and service packets/s and bytes/s -- summed over every node, from the
snapshots the shims write to the ``vgw_traffic`` bucket (:mod:`vgw.traffic`).

Rates come from two snapshots of the same node: the counters' difference over the time between
the two STATS reads. The first frame therefore waits for each node's next snapshot (a shim writes
one per ``status_interval_s``, 1 s by default); a node whose forwarder restarted in between (its
totals started again) or that wrote nothing new counts for connections but not for rates, and the
frame says which nodes those are. Per backend the forwarder counts connections, not packets (a
per-packet count per backend would slow its fast path), so backend rows have no packet or byte
rates. A backend missing from a node's earlier snapshot has a rate only when that snapshot carried
all of its service's backends (then it is new and counted from zero); a node with more backends
than a snapshot carries (:data:`vgw.traffic.SNAPSHOT_BACKENDS_MAX`) leaves its quietest ones out,
and the service says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vgw.bus import Bus
from vgw.store import Change, KvStore, Snapshot
from vgw.traffic import NodeTraffic, ServiceTraffic, open_traffic

from . import live
from .output import FORMATS, table

FIRST_WAIT_S = 5.0
"""How long the first frame waits for every node's next snapshot."""
COUNTERS = ("conn_new", "packets_in", "packets_out", "bytes_in", "bytes_out")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="traffic per VIP, service and backend, summed over the nodes (live, from the shims)",
        description="Active connections, new connections/s, packets/s and bytes/s per VIP and per service, "
        "and active and new connections/s per backend, summed over every node, from the traffic snapshots "
        "the shims write to NATS. Rates are over the interval between two snapshots of each node.",
    )
    p.add_argument("--vip", help="only this VIP")
    p.add_argument("--service", help="only this service")
    p.add_argument("--node", help="only this node")
    p.add_argument("--no-backends", action="store_true", help="leave out the backend rows (table and JSON)")
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    live.add_watch(p)
    p.set_defaults(func=cmd_top)


def cmd_top(args: argparse.Namespace) -> int:
    follower = TrafficFollower()
    flt = Filter(vip=args.vip, service=args.service, node=args.node, backends=not args.no_backends)

    async def view(bus: Bus) -> live.Frame:
        return await follower.frame(bus, flt)

    return live.run(args, view)


@dataclass(frozen=True)
class Filter:
    vip: str | None = None
    service: str | None = None
    node: str | None = None
    backends: bool = True


BackendKey = tuple[str, int]  # (address, port)


@dataclass
class BackendRow:
    address: str
    port: int
    conn_active: int = 0
    conn_new_per_s: float = 0.0
    nodes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "conn_active": self.conn_active,
            "conn_new_per_s": round(self.conn_new_per_s, 3),
            "nodes": sorted(self.nodes),
        }


@dataclass
class ServiceRow:
    service: str
    vip: str
    port: int
    proto: str
    conn_active: int = 0
    rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    nodes: list[str] = field(default_factory=list)
    backends: dict[BackendKey, BackendRow] = field(default_factory=dict)
    backends_complete: bool = True

    def as_dict(self, with_backends: bool = True) -> dict[str, Any]:
        out = {
            "service": self.service,
            "vip": self.vip,
            "port": self.port,
            "proto": self.proto,
            "conn_active": self.conn_active,
            "conn_new_per_s": round(self.rates["conn_new"], 3),
            "packets_per_s": round(self.rates["packets_in"] + self.rates["packets_out"], 3),
            "packets_in_per_s": round(self.rates["packets_in"], 3),
            "packets_out_per_s": round(self.rates["packets_out"], 3),
            "bytes_per_s": round(self.rates["bytes_in"] + self.rates["bytes_out"], 3),
            "bytes_in_per_s": round(self.rates["bytes_in"], 3),
            "bytes_out_per_s": round(self.rates["bytes_out"], 3),
            "nodes": sorted(self.nodes),
        }
        if with_backends:
            order = sorted(self.backends, key=lambda k: (ipaddress.ip_address(k[0]), k[1]))
            out["backends"] = [self.backends[k].as_dict() for k in order]
            out["backends_complete"] = self.backends_complete
        return out


@dataclass
class NodeRates:
    """One node's rates between two snapshots of the same forwarder run."""

    interval_s: float
    services: dict[str, dict[str, float]]
    """Per service, each counter's rate."""
    backend_conn_new: dict[tuple[str, str, int], float]
    """Per (service, address, port), new connections/s; a backend without a rate is left out."""


def backend_rates(
    name: str, prev: ServiceTraffic | None, cur: ServiceTraffic, dt: float
) -> dict[tuple[str, str, int], float]:
    before = {(str(b.address), b.port): b.conn_new for b in prev.backends} if prev else {}
    # a backend the earlier snapshot lacks is new (counted from zero) only if that snapshot had them all
    complete = prev is None or len(prev.backends) == prev.backends_total
    out = {}
    for b in cur.backends:
        key = (str(b.address), b.port)
        if key in before:
            out[(name, *key)] = max(0, b.conn_new - before[key]) / dt  # re-created in between: from zero
        elif complete:
            out[(name, *key)] = b.conn_new / dt
    return out


def node_rates(prev: NodeTraffic | None, cur: NodeTraffic) -> NodeRates | None:
    """Rates between two snapshots of one node; None when there is no earlier snapshot of the same
    forwarder run to compare with."""
    if prev is None or cur.at <= prev.at:
        return None
    if cur.forwarder_pid != prev.forwarder_pid or cur.uptime_ms < prev.uptime_ms:
        return None  # the forwarder restarted: its totals started again
    dt = (cur.at - prev.at).total_seconds()
    out: dict[str, dict[str, float]] = {}
    backends: dict[tuple[str, str, int], float] = {}
    for name, s in cur.services.items():
        p = prev.services.get(name)
        if p is None or (p.vip, p.port, p.proto) != (s.vip, s.port, s.proto):
            out[name] = {c: getattr(s, c) / dt for c in COUNTERS} if p is None else {}
            if p is None:
                backends |= backend_rates(name, None, s, dt)
            continue
        # a service re-created between the reads starts from zero: count what it has, not a negative
        out[name] = {c: max(0, getattr(s, c) - getattr(p, c)) / dt for c in COUNTERS}
        backends |= backend_rates(name, p, s, dt)
    return NodeRates(dt, out, backends)


def aggregate(prev: dict[str, NodeTraffic], cur: dict[str, NodeTraffic], flt: Filter, now: datetime) -> dict[str, Any]:
    """One frame's data: per service and per VIP, summed over the nodes."""
    rows: dict[tuple[str, str, int, str], ServiceRow] = {}
    nodes_info = []
    no_rates: list[str] = []
    for node, snap in sorted(cur.items()):
        if flt.node is not None and snap.node != flt.node:
            continue
        rated = node_rates(prev.get(node), snap)
        nodes_info.append(
            {
                "node": snap.node,
                "at": snap.at.isoformat(),
                "age_s": round(live.age_s(snap.at, now), 3),
                "interval_s": round(rated.interval_s, 3) if rated else None,
            }
        )
        if rated is None:
            no_rates.append(snap.node)
        for name, s in snap.services.items():
            if flt.service is not None and name != flt.service:
                continue
            if flt.vip is not None and str(s.vip) != flt.vip:
                continue
            key = (name, str(s.vip), s.port, s.proto)
            row = rows.setdefault(key, ServiceRow(name, str(s.vip), s.port, s.proto))
            row.conn_active += s.conn_active
            row.nodes.append(snap.node)
            for c, v in (rated.services.get(name, {}) if rated else {}).items():
                row.rates[c] += v
            row.backends_complete &= len(s.backends) == s.backends_total
            for b in s.backends:
                brow = row.backends.setdefault((str(b.address), b.port), BackendRow(str(b.address), b.port))
                brow.conn_active += b.conn_active
                brow.nodes.append(snap.node)
                brow.conn_new_per_s += rated.backend_conn_new.get((name, str(b.address), b.port), 0.0) if rated else 0.0
    services = [r.as_dict(flt.backends) for _k, r in sorted(rows.items())]
    vips: dict[str, dict[str, Any]] = {}
    for row_data in services:
        vip_row = vips.setdefault(
            row_data["vip"],
            {"vip": row_data["vip"], "services": 0, "conn_active": 0, "conn_new_per_s": 0.0, "packets_per_s": 0.0,
             "bytes_per_s": 0.0},
        )  # fmt: skip
        vip_row["services"] += 1
        for k in ("conn_active", "conn_new_per_s", "packets_per_s", "bytes_per_s"):
            vip_row[k] = round(vip_row[k] + row_data[k], 3)
    return {
        "at": now.isoformat(),
        "nodes": nodes_info,
        "nodes_without_rates": no_rates,
        "vips": [vips[k] for k in sorted(vips)],
        "services": services,
    }


def _n(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{unit}"
    return f"{v:.1f}" if v and abs(v) < 10 else f"{v:.0f}"


def as_text(data: dict[str, Any]) -> str:
    if not data["nodes"]:
        return "no traffic snapshots (is vgw-shim running, connected to its forwarder?)"
    nodes = ", ".join(n["node"] for n in data["nodes"])
    lines = [f"nodes: {nodes}"]
    if data["nodes_without_rates"]:
        lines.append(
            f"no rates yet for {', '.join(data['nodes_without_rates'])} "
            "(no second snapshot, or its forwarder restarted)"
        )
    lines += ["", "per VIP:"]
    vip_rows = [[v["vip"], v["services"], v["conn_active"], _n(v["conn_new_per_s"]), _n(v["packets_per_s"]),
                 _n(v["bytes_per_s"])] for v in data["vips"]]  # fmt: skip
    lines.append(
        table(["VIP", "SERVICES", "CONNS", "NEW/S", "PKTS/S", "BYTES/S"], vip_rows) if vip_rows else "  (none)"
    )
    lines += ["", "per service and backend:"]
    rows: list[list[Any]] = []
    for s in data["services"]:
        rows.append(
            [s["service"], f"{s['vip']}:{s['port']}/{s['proto']}", s["conn_active"], _n(s["conn_new_per_s"]),
             _n(s["packets_in_per_s"]), _n(s["packets_out_per_s"]), _n(s["bytes_in_per_s"]), _n(s["bytes_out_per_s"]),
             len(s["nodes"])]
        )  # fmt: skip
        # backend rows under their service; no packets or bytes: the forwarder counts none per backend
        for b in s.get("backends", []):
            rows.append([f"  {_endpoint(b['address'], b['port'])}", "", b["conn_active"], _n(b["conn_new_per_s"]),
                         "", "", "", "", len(b["nodes"])])  # fmt: skip
        if not s.get("backends_complete", True):
            rows.append(["  (busiest backends only)", "", "", "", "", "", "", "", ""])
    header = ["SERVICE", "VIP", "CONNS", "NEW/S", "PKTS IN/S", "PKTS OUT/S", "BYTES IN/S", "BYTES OUT/S", "NODES"]
    lines.append(table(header, rows) if rows else "  (none)")
    return "\n".join(lines)


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class TrafficFollower:
    """Follows ``vgw_traffic`` (a KV watch: snapshot, then every write) and keeps, per node, the
    latest snapshot and the one the previous frame was computed up to."""

    def __init__(self) -> None:
        self.latest: dict[str, NodeTraffic] = {}
        self.baseline: dict[str, NodeTraffic] = {}
        self.changed = asyncio.Event()
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _follow(self, store: KvStore[NodeTraffic]) -> None:
        # ends with the connection (vgwctl closes it on exit): nothing to report then
        try:
            with contextlib.suppress(Exception):
                await self._follow_once(store)
        finally:
            self.loaded.set()  # a watch that failed before its snapshot must not hang the first frame

    async def _follow_once(self, store: KvStore[NodeTraffic]) -> None:
        async for ev in store.watch(">"):
            if isinstance(ev, Snapshot):
                self.latest = {k: e.value for k, e in ev.entries.items()}
                self.loaded.set()
            elif isinstance(ev, Change):
                if ev.entry is None:
                    self.latest.pop(ev.key, None)
                else:
                    self.latest[ev.key] = ev.entry.value
            self.changed.set()

    async def _start(self, bus: Bus) -> bool:
        """False when no shim has created the bucket yet."""
        try:
            store = await open_traffic(bus, create=False)
        except Exception:
            return False
        self._task = asyncio.create_task(self._follow(store))
        await self.loaded.wait()
        return True

    async def _wait_for_next(self, deadline: float) -> None:
        """Until every node of the baseline has a newer snapshot, or the deadline."""
        while time.monotonic() < deadline:
            if all(n in self.latest and self.latest[n].at > b.at for n, b in self.baseline.items()):
                return
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())

    async def frame(self, bus: Bus, flt: Filter) -> live.Frame:
        if self._task is None and not await self._start(bus):
            data = aggregate({}, {}, flt, datetime.now(UTC))
            return live.Frame(data, as_text(data))
        if not self.baseline:
            self.baseline = dict(self.latest)
            await self._wait_for_next(time.monotonic() + FIRST_WAIT_S)
        current = dict(self.latest)
        data = aggregate(self.baseline, current, flt, datetime.now(UTC))
        self.baseline = current  # the next frame's rates start where this one's ended
        return live.Frame(data, as_text(data))
