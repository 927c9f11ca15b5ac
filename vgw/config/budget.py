"""The memory one node's forwarder (vgw-fwd) needs for a document, checked against the node's
``forwarder.memory_budget`` by validation.

The figure is a specification shared with vgw-fwd, which computes the same number from what it is
given (a cross-check test compares the two): change a constant here only together with the
forwarder. With ``C`` = ``forwarder.conn_capacity`` and, per service, ``n`` backends, ``l`` LIPs
and ``T`` the scheduler table::

    total     = BASE + workers * (conn_table_bytes(C) + WORKER_FIXED)
                + sum(service_bytes(n, l, T) over the node's services) + transient
    conn_table_bytes(C) = 64*C + 64*pow2ceil(ceil(4*C/10)) + 4*C + 8*C + 16*pow2ceil(max(1024, 2*C))
    service_bytes       = 2048 + 160*n + 128*l + T
    T (maglev, M)       = round4k(2*M)                  M = maglev_table_size, default 65537
    T (wrr)             = round4k(2*(min(S, 65536) + k))  k backends of weight > 0, g the gcd of
                                                        their weights, S = sum(weight/g); 0 if k = 0
    T (wlc)             = 0
    transient           = the largest T of the node's services (a change rebuilds a service's
                          table beside the old one); 0 without services

Packet buffers live in hugepages and are not part of the budget. "The node's services" are what
its forwarder is given (:func:`vgw.config.model.forwarder_unsupported` and friends, the selection
the shim's ``desired_state`` makes): the services of the VIPs the node serves (as primary or
standby, :func:`vgw.config.model.node_view`) with an IPv4 VIP and fullnat forwarding, on a node
with at least one IPv4 LIP; ``n`` counts the IPv4 backends in every state; ``l`` is the node's
IPv4 LIPs, at most 256.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .model import (
    ConfigDocument,
    Node,
    ServingNodes,
    Vip,
    forwarder_backends,
    forwarder_lips,
    forwarder_unsupported,
)
from .types import format_bytes

MiB = 1 << 20
PAGE = 4096
"""Tables are allocated in whole pages."""

BASE = 64 * MiB
"""The process, its libraries and the EAL heap (packet buffers are in hugepages, not counted)."""

# One worker's connection table, for C connections (conn_table_bytes):
CONN_ENTRY = 64
"""Bytes per connection record (x C)."""
CONN_BUCKET = 64
"""Bytes per index bucket (x pow2ceil(ceil(C * CONN_BUCKETS_NUM / CONN_BUCKETS_DEN)))."""
CONN_BUCKETS_NUM = 4
CONN_BUCKETS_DEN = 10
CONN_INDEX = 4
"""Bytes per connection of the free stack (x C)."""
CONN_RING = 8
"""Bytes per connection of the half-open eviction ring (x C): under table pressure the oldest
half-open entries are evicted first."""
CONN_SLOT = 16
"""Bytes per slot of the forwarder's shadow set (x pow2ceil(max(CONN_MIN_SLOTS, CONN_SLOTS_PER_CONN * C)))."""
CONN_SLOTS_PER_CONN = 2
CONN_MIN_SLOTS = 1024
WORKER_FIXED = 2228224
"""Everything else one worker holds whatever its capacity (per-service counters and snapshots,
scheduler state, per-backend connection counts; flood protection: per-service counters and rate
state, the per-/24 limiter, held segments, per-LIP exhaustion counts)."""

# One service (service_bytes):
SERVICE_FIXED = 2048
"""The service's configuration and engine entries, indexes, counters."""
SERVICE_PER_BACKEND = 160
"""Per backend: configuration and engine entries, scheduler candidate, indexes."""
SERVICE_PER_LIP = 128
"""Per LIP: configuration and engine entries, address table slots."""

# Scheduler tables (scheduler_table_bytes):
TABLE_ENTRY = 2
"""Bytes per entry of a Maglev or WRR table."""
MAGLEV_DEFAULT_TABLE = 65537
"""Maglev table size when a service sets no ``maglev_table_size``."""
WRR_MAX_SLOTS = 65536
"""A WRR table holds at most this many slots for the reduced weights, plus one per backend."""


def pow2ceil(x: int) -> int:
    """The smallest power of two >= ``x`` (1 for ``x`` <= 1)."""
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


def round4k(x: int) -> int:
    """``x`` rounded up to a whole number of 4096-byte pages."""
    return -(-x // PAGE) * PAGE


def conn_table_bytes(capacity: int) -> int:
    """One worker's connection table for ``capacity`` connections."""
    buckets = pow2ceil(-(-CONN_BUCKETS_NUM * capacity // CONN_BUCKETS_DEN))
    slots = pow2ceil(max(CONN_MIN_SLOTS, CONN_SLOTS_PER_CONN * capacity))
    return CONN_ENTRY * capacity + CONN_BUCKET * buckets + (CONN_INDEX + CONN_RING) * capacity + CONN_SLOT * slots


def worker_bytes(capacity: int) -> int:
    """One worker: its connection table and its fixed part."""
    return conn_table_bytes(capacity) + WORKER_FIXED


def maglev_table_bytes(size: int | None) -> int:
    return round4k(TABLE_ENTRY * (MAGLEV_DEFAULT_TABLE if size is None else size))


def wrr_table_bytes(weights: Iterable[int]) -> int:
    """The WRR table for backends of these weights (weight 0 takes no slot)."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return 0
    g = math.gcd(*positive)
    slots = sum(w // g for w in positive)
    return round4k(TABLE_ENTRY * (min(slots, WRR_MAX_SLOTS) + len(positive)))


def scheduler_table_bytes(scheduler: str, table_size: int | None, weights: Iterable[int]) -> int:
    """The scheduler table of one service (``weights``: of the backends the forwarder gets)."""
    if scheduler == "maglev":
        return maglev_table_bytes(table_size)
    if scheduler == "wrr":
        return wrr_table_bytes(weights)
    return 0  # wlc picks by counting, without a table


def service_bytes(backends: int, lips: int, table: int) -> int:
    """One service with ``backends`` backends, ``lips`` LIPs and a scheduler table of ``table`` bytes."""
    return SERVICE_FIXED + SERVICE_PER_BACKEND * backends + SERVICE_PER_LIP * lips + table


@dataclass(frozen=True, slots=True)
class MemoryCost:
    """What one node's forwarder needs, by part (bytes)."""

    node: str
    base: int
    workers: int
    conn_capacity: int
    connection_tables: int
    """Every worker's connection table and fixed part: workers * worker_bytes(conn_capacity)."""
    services: int
    """How many services the forwarder holds."""
    service_structures: int
    """Sum over the services of service_bytes without the scheduler table."""
    scheduler_tables: int
    transient: int
    """The largest scheduler table: a change builds a service's new table beside the old one."""

    @property
    def total(self) -> int:
        return self.base + self.connection_tables + self.service_structures + self.scheduler_tables + self.transient

    def explain(self) -> str:
        """``640.4 MiB (671457280 bytes: scheduler tables ... )``."""
        plural = "s" if self.services != 1 else ""
        wplural = "s" if self.workers != 1 else ""
        return (
            f"{format_bytes(self.total)} ({self.total} bytes: "
            f"scheduler tables {format_bytes(self.scheduler_tables)} for {self.services} service{plural}, "
            f"connection tables {format_bytes(self.connection_tables)} for {self.workers} worker{wplural} x "
            f"{self.conn_capacity} connections, "
            f"service structures {format_bytes(self.service_structures)}, "
            f"base {format_bytes(self.base)}, "
            f"transient {format_bytes(self.transient)})"
        )


def _lip_count(node: Node) -> int:
    try:
        lips = node.lips()
    except ValueError:  # a prefix too large: validation reports it; such a node takes nothing
        return 0
    return len(forwarder_lips(lips)[0])


VipCostCache = dict[int, tuple[Vip, tuple[int, int, int, int]]]
"""id(vip) -> (the VIP, its services' (count, structures' bytes, table bytes, largest table)), for a
caller that computes the costs of revision after revision whose unchanged VIPs are the same objects
(the config reader's assembly reuses them)."""


def _vip_cost(vip: Vip) -> tuple[int, int, int, int]:
    v_count = v_fixed = v_tables = v_largest = 0
    for svc in vip.services:
        if forwarder_unsupported(vip, svc) is not None:
            continue
        backends = forwarder_backends(svc)
        t = scheduler_table_bytes(svc.scheduler, svc.maglev_table_size, (b.weight for b in backends))
        v_count += 1
        v_fixed += SERVICE_FIXED + SERVICE_PER_BACKEND * len(backends)
        v_tables += t
        v_largest = max(v_largest, t)
    return v_count, v_fixed, v_tables, v_largest


def node_costs(doc: ConfigDocument, cache: VipCostCache | None = None) -> dict[str, MemoryCost]:
    """The memory each node's forwarder needs for ``doc``, by node id (one pass over the VIPs;
    each service's part is computed once, however many nodes serve it, and with ``cache`` once
    for as long as the same VIP object comes back)."""
    lips: dict[str, int] = {}
    for n in doc.nodes:
        lips.setdefault(n.id, _lip_count(n))  # the first of duplicate ids, as node_view takes it
    count = dict.fromkeys(lips, 0)
    structures = dict.fromkeys(lips, 0)
    tables = dict.fromkeys(lips, 0)
    largest = dict.fromkeys(lips, 0)
    serving = ServingNodes(doc)
    for vip in doc.vips:
        primary, standby = serving(vip)
        nodes = [nid for nid in dict.fromkeys((*primary, *standby)) if lips.get(nid)]
        if not nodes:
            continue
        hit = cache.get(id(vip)) if cache is not None else None
        if hit is not None and hit[0] is vip:
            v_count, v_fixed, v_tables, v_largest = hit[1]
        else:
            v_count, v_fixed, v_tables, v_largest = _vip_cost(vip)
            if cache is not None:
                cache[id(vip)] = (vip, (v_count, v_fixed, v_tables, v_largest))
        if not v_count:
            continue
        for nid in nodes:
            count[nid] += v_count
            structures[nid] += v_fixed + SERVICE_PER_LIP * lips[nid] * v_count
            tables[nid] += v_tables
            largest[nid] = max(largest[nid], v_largest)
    out: dict[str, MemoryCost] = {}
    for n in doc.nodes:
        if n.id in out:
            continue
        fwd = n.forwarder
        out[n.id] = MemoryCost(
            node=n.id,
            base=BASE,
            workers=fwd.workers,
            conn_capacity=fwd.conn_capacity,
            connection_tables=fwd.workers * worker_bytes(fwd.conn_capacity),
            services=count[n.id],
            service_structures=structures[n.id],
            scheduler_tables=tables[n.id],
            transient=largest[n.id],
        )
    return out


def node_cost(doc: ConfigDocument, node_id: str) -> MemoryCost | None:
    """The memory ``node_id``'s forwarder needs for ``doc``; None when the node is not in it."""
    return node_costs(doc).get(node_id)


def over_budget(node: Node, cost: MemoryCost) -> str | None:
    """Why ``cost`` does not fit ``node``'s memory budget, or None when it does."""
    budget = node.forwarder.memory_budget
    if cost.total <= budget:
        return None
    return (
        f"node {node.id} needs {cost.explain()}, more than its memory budget of {format_bytes(budget)} "
        f"({budget} bytes): raise the budget (and the forwarder's memory limit), use smaller maglev tables "
        "(maglev_table_size), a smaller conn_capacity, or serve fewer services on this node"
    )
