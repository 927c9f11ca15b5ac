"""Per-node traffic snapshots as level state: the ``vgw_traffic`` KV bucket.

Each node's shim writes one entry, keyed by the node id, every time it reads the forwarder's
``STATS`` (``status_interval_s``): the forwarder's own per-service totals (packets, bytes, new
connections) and gauges (active connections), and per backend its active and new connections (the
forwarder counts no packets per backend). A node can have up to 65,536 backends and a NATS message
is at most 1 MiB, so a snapshot carries the ``SNAPSHOT_BACKENDS_MAX`` busiest of them and each
service says how many it has. The bucket has a TTL, so the entry of a node whose
shim is gone expires instead of showing old figures as current. Totals, not rates, are stored:
any reader turns two snapshots into rates over exactly the interval between them (``vgwctl top``
does), and a forwarder restart shows as totals going down, not as a wrong rate.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from nats.js import api
from pydantic import BaseModel, ConfigDict, Field

from vgw.bus import Bus
from vgw.events import IPAddress
from vgw.store import KvStore

TRAFFIC_BUCKET = "vgw_traffic"
TRAFFIC_TTL_S = 30.0
"""How long a node's snapshot outlives its last write (a shim writes every second by default)."""

SNAPSHOT_BACKENDS_MAX = 1024
"""Backends one snapshot carries at most, over all services: the busiest (most active connections,
then most created). About 100 bytes each as JSON, so with a node's 4096 services the snapshot stays
well under NATS's 1 MiB message limit."""

__all__ = [
    "SNAPSHOT_BACKENDS_MAX",
    "TRAFFIC_BUCKET",
    "TRAFFIC_TTL_S",
    "BackendTraffic",
    "NodeTraffic",
    "ServiceTraffic",
    "node_traffic",
    "open_traffic",
]

Count = Annotated[int, Field(ge=0)]
_COUNTS = ("conn_active", "conn_new", "packets_in", "packets_out", "bytes_in", "bytes_out")


class BackendTraffic(BaseModel):
    """One backend of one service on one node, as the forwarder's ``STATS`` reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: IPAddress
    port: Annotated[int, Field(ge=0, le=65535)]
    conn_active: Count = Field(default=0, description="Connections to it in the tables now (a gauge)")
    conn_new: Count = Field(default=0, description="Connections created to it since it appeared in this forwarder run")


class ServiceTraffic(BaseModel):
    """One service's counters on one node, as the forwarder's ``STATS`` reports them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vip: IPAddress
    port: Annotated[int, Field(ge=0, le=65535)]
    proto: Literal["tcp", "udp"]
    conn_active: Count = Field(default=0, description="Connections in the tables now (a gauge)")
    conn_new: Count = Field(default=0, description="New connections since the forwarder started")
    packets_in: Count = Field(default=0, description="Client -> backend packets since the forwarder started")
    packets_out: Count = Field(default=0, description="Backend -> client packets since the forwarder started")
    bytes_in: Count = 0
    bytes_out: Count = 0
    backends: list[BackendTraffic] = Field(
        default=[],
        description="Its backends in this snapshot (all, unless the node has more than the snapshot carries)",
    )
    backends_total: Count = Field(default=0, description="How many backends the forwarder reported for it")


class NodeTraffic(BaseModel):
    """One node's forwarder traffic at one instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
    at: datetime = Field(description="When the shim read the forwarder's STATS")
    uptime_ms: Count = Field(description="The forwarder's uptime at that read: totals restart with it")
    forwarder_pid: Count = 0
    services: dict[str, ServiceTraffic] = {}


def node_traffic(node: str, stats: Mapping[str, Any], at: datetime) -> NodeTraffic:
    """A snapshot from one ``STATS`` reply (docs/forwarder.md, "Counters and telemetry")."""
    reported = {name: s for name, s in (stats.get("services") or {}).items()}
    kept = _busiest_backends(reported, SNAPSHOT_BACKENDS_MAX)
    services: dict[str, ServiceTraffic] = {}
    for name, s in reported.items():
        backends = s.get("backends") or []  # a forwarder older than the per-backend counters has none
        services[name] = ServiceTraffic(
            vip=s["vip"],
            port=int(s.get("port", 0)),
            proto="udp" if s.get("proto") == "udp" else "tcp",
            **{f: int(s.get(f, 0)) for f in _COUNTS},
            backends=[_backend(b) for i, b in enumerate(backends) if (name, i) in kept],
            backends_total=len(backends),
        )
    return NodeTraffic(
        node=node,
        at=at,
        uptime_ms=int(stats.get("uptime_ms", 0)),
        forwarder_pid=int(stats.get("pid", 0)),
        services=services,
    )


def _backend(b: Mapping[str, Any]) -> BackendTraffic:
    return BackendTraffic(
        address=b["address"],
        port=int(b.get("port", 0)),
        conn_active=int(b.get("conn_active", 0)),
        conn_new=int(b.get("conn_new", 0)),
    )


def _busiest_backends(services: Mapping[str, Mapping[str, Any]], limit: int) -> set[tuple[str, int]]:
    """(service, index in its list) of the ``limit`` busiest backends of the reply."""
    everyone = [
        (int(b.get("conn_active", 0)), int(b.get("conn_new", 0)), name, i)
        for name, s in services.items()
        for i, b in enumerate(s.get("backends") or [])
    ]
    if len(everyone) > limit:
        everyone = heapq.nlargest(limit, everyone, key=lambda e: (e[0], e[1]))
    return {(name, i) for _a, _n, name, i in everyone}


async def open_traffic(bus: Bus, *, create: bool = True) -> KvStore[NodeTraffic]:
    """The bucket as its writers create it: a TTL, one value per key, in memory (a snapshot is worth
    nothing after a NATS restart: the shims write a fresh one within a second)."""
    return await KvStore.open(
        bus, TRAFFIC_BUCKET, NodeTraffic, ttl_s=TRAFFIC_TTL_S, storage=api.StorageType.MEMORY, create=create
    )
