"""This node's desired forwarder state, from the config document and the health bucket.

:func:`desired_state` is a pure function: (config document, health entries, node id) -> the
services, LIPs and backends (with weight and state) vgw-fwd should have. The shim computes it in two
steps: :class:`NodePlan` once per config revision (what the document alone decides) and
:meth:`NodePlan.evaluate` per burst of health changes. :func:`render` writes it
as a ``vgw-config 1`` document (a full apply); :func:`delta` writes the ``vgw-delta 1`` document
that turns one state into another, or returns None when only a full apply can (document-wide
timeouts changed).

Backend state in the forwarder:

* config ``disabled`` -> ``disabled``; config ``draining`` -> ``draining``;
* config ``enabled`` and health down -> ``draining``: no new connections, established ones continue
  (they end by themselves if the backend is really dead; a flapping check does not cut users);
* config ``enabled`` and health up -> ``active``. A backend with no health entry yet takes the
  check's ``initial_state``; ``unknown`` counts as up (HAProxy's default: a server is in service
  until its first check says otherwise). A service without a health check is always up.

Flood protection (:func:`vgw.config.service_protection`: the service's, else its VIP's, else the
defaults) is written as service-line options, only where it differs from what a bare service line
means to vgw-fwd (``syn_proxy=off``, default thresholds, no caps, no RSTs), so lines stay short. A
change of protection changes the service line, and :func:`delta` replaces a service whose line
changed (``service remove`` + ``service add`` with its LIPs and backends, in one delta); its
connections keep working, since the forwarder's connections refer to services by (protocol, VIP,
port).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from vgw.config import (
    AUTO_HALF_OPEN_DEFAULT,
    AUTO_SYN_RATE_DEFAULT,
    ConfigDocument,
    EffectiveProtection,
    Limits,
    NodeView,
    Timeouts,
    forwarder_backends,
    forwarder_lips,
    forwarder_unsupported,
    node_view,
    service_protection,
)
from vgw.events import BackendState
from vgw.health import HealthEntry

log = logging.getLogger("vgw.shim.desired")

MAX_LIPS_PER_SERVICE = Limits.LIPS_PER_NODE  # the forwarder's limit (VGW_MAX_LIPS_PER_SVC)
STATE_NAMES = (
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_synack",
    "udp",
)


@dataclass(frozen=True, slots=True)
class FwdBackend:
    address: str
    port: int
    weight: int
    state: str  # active | draining | disabled
    reason: str = ""  # why it is not active (config, health down: <reason>)


FWD_DEFAULT_PROTECTION = EffectiveProtection(
    syn_proxy="off",
    auto_half_open=AUTO_HALF_OPEN_DEFAULT,
    auto_syn_rate=AUTO_SYN_RATE_DEFAULT,
    conn_rate=0,
    conn_rate_per_source_24=0,
    rst_unknown=False,
)
"""What vgw-fwd gives a service line without protection options (its ``vgw_cfg_protect_t`` defaults)."""


def protection_options(p: EffectiveProtection) -> list[str]:
    """The service-line options for ``p``: only those that differ from :data:`FWD_DEFAULT_PROTECTION`
    (the auto thresholds only in auto mode, where they mean something)."""
    out: list[str] = []
    if p.syn_proxy != "off":
        out.append(f"syn_proxy={p.syn_proxy}")
    if p.syn_proxy == "auto" and p.auto_half_open != AUTO_HALF_OPEN_DEFAULT:
        out.append(f"syn_proxy_halfopen={p.auto_half_open}")
    if p.syn_proxy == "auto" and p.auto_syn_rate != AUTO_SYN_RATE_DEFAULT:
        out.append(f"syn_proxy_syn_rate={p.auto_syn_rate}")
    if p.conn_rate:
        out.append(f"conn_rate={p.conn_rate}")
    if p.conn_rate_per_source_24:
        out.append(f"conn_rate_src24={p.conn_rate_per_source_24}")
    if p.rst_unknown:
        out.append("rst_unknown=on")
    return out


@dataclass(frozen=True, slots=True)
class FwdService:
    name: str
    protocol: str
    vip: str
    port: int
    scheduler: str
    table: int | None
    toa: bool
    timeouts: tuple[tuple[str, int], ...]
    lips: tuple[str, ...]
    backends: tuple[FwdBackend, ...]
    protection: EffectiveProtection = FWD_DEFAULT_PROTECTION

    def line(self) -> tuple[object, ...]:
        """Everything but the backends (what :meth:`header` and the LIP lines are made of), cheap to compare."""
        return (
            self.name, self.protocol, self.vip, self.port, self.scheduler, self.table, self.toa, self.timeouts,
            self.lips, self.protection,
        )  # fmt: skip

    def header(self) -> str:
        """The ``service`` line's arguments after ``service``."""
        parts = [self.name, self.protocol, self.vip, str(self.port), self.scheduler]
        if self.scheduler == "maglev" and self.table is not None:
            parts.append(f"table={self.table}")
        parts.append(f"toa={'on' if self.toa else 'off'}")
        if self.protocol == "tcp":
            parts += protection_options(self.protection)
        else:  # vgw-fwd takes only the caps on UDP
            parts += [o for o in protection_options(self.protection) if o.startswith("conn_rate")]
        parts += [f"timeout.{k}={v}" for k, v in self.timeouts]
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class DesiredState:
    node: str
    config_revision: int
    timeouts: tuple[tuple[str, int], ...] = ()
    services: tuple[FwdService, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # services the forwarder cannot take (IPv6), with why

    @property
    def vips(self) -> list[str]:
        return sorted({s.vip for s in self.services}, key=ipaddress.ip_address)


def _timeouts(t: Timeouts) -> tuple[tuple[str, int], ...]:
    vals = t.set_values()
    return tuple((k, max(1, min(86400, vals[k]))) for k in STATE_NAMES if k in vals)


def backend_health(entry: HealthEntry | None, initial: str) -> tuple[bool, str]:
    """(healthy, reason) for one backend's probe stream."""
    if entry is None:
        return initial != "down", "" if initial != "down" else "health: initial state down"
    if entry.state == BackendState.DOWN:
        detail = f" ({entry.detail})" if entry.detail else ""
        return False, f"health down: {entry.reason}{detail}"
    return True, ""


def desired_state(
    doc: ConfigDocument, health: Mapping[str, HealthEntry], node_id: str, config_revision: int
) -> DesiredState:
    """The node's desired state from scratch: a fresh plan, evaluated without a previous state (what
    the shim's per-revision plan and per-burst evaluation must come to)."""
    return NodePlan.build(doc, node_id, config_revision).evaluate(health)


@dataclass(frozen=True, slots=True)
class _BackendPlan:
    """One backend as far as the config decides it: ``fixed`` is its forwarder backend whatever the
    health (config disabled/draining, or unchecked); otherwise health ``key`` decides between
    ``active`` and a drained copy."""

    fixed: FwdBackend | None
    active: FwdBackend
    key: str | None
    initial: str


@dataclass(frozen=True, slots=True)
class _ServicePlan:
    service: FwdService  # with its backends as the config alone makes them (every checked one active)
    backends: tuple[_BackendPlan, ...]


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What of a node's desired state depends on the config document alone, computed once per
    revision: services, LIPs, protection, the backends' address strings and health keys. What is
    left per health change (:meth:`evaluate`) is a dictionary look-up per checked backend: at
    10,000 backends about a tenth of the from-scratch cost (formatting addresses and health keys is
    most of that)."""

    node: str
    config_revision: int
    timeouts: tuple[tuple[str, int], ...]
    services: tuple[_ServicePlan, ...]
    skipped: tuple[str, ...]

    @classmethod
    def build(cls, doc: ConfigDocument, node_id: str, config_revision: int) -> NodePlan:
        view: NodeView | None = node_view(doc, node_id)
        if view is None:
            return cls(node_id, config_revision, (), (), ())
        # The selection (which services, LIPs and backends) is shared with the memory budget
        # (vgw.config.budget), so validation counts exactly what is programmed here.
        kept, dropped = forwarder_lips(view.lips)
        if dropped:
            log.warning(
                "node %s has %d IPv4 LIPs; the forwarder takes %d", node_id, len(kept) + dropped, MAX_LIPS_PER_SERVICE
            )
        lips = tuple(str(a) for a in kept)
        services: list[_ServicePlan] = []
        skipped: list[str] = []
        for ns in view.services:
            svc = ns.service
            why = forwarder_unsupported(ns.vip, svc)
            if why is not None:
                skipped.append(f"{svc.name}: {why}")
                continue
            if not lips:
                skipped.append(f"{svc.name}: node {node_id} has no IPv4 LIP")
                continue
            backends: list[_BackendPlan] = []
            for b in forwarder_backends(svc):
                addr = str(b.address)
                active = FwdBackend(addr, b.port, b.weight, "active")
                if b.state == "disabled":
                    fixed: FwdBackend | None = FwdBackend(addr, b.port, b.weight, "disabled", "config: disabled")
                elif b.state == "draining":
                    fixed = FwdBackend(addr, b.port, b.weight, "draining", "config: draining")
                else:
                    key = ns.backend_health_key(b)
                    if key is not None and ns.health_check is not None:
                        backends.append(_BackendPlan(None, active, key, ns.health_check.initial_state))
                        continue
                    fixed = active  # no health check: always in service
                backends.append(_BackendPlan(fixed, active, None, ""))
            service = FwdService(
                name=svc.name,
                protocol=svc.protocol,
                vip=str(ns.vip.address),
                port=svc.port,
                scheduler=svc.scheduler,
                table=svc.maglev_table_size,
                toa=svc.toa_enabled and svc.protocol == "tcp",
                timeouts=_timeouts(svc.timeouts),
                lips=lips,
                backends=tuple(bp.fixed or bp.active for bp in backends),
                protection=service_protection(ns.vip, svc),
            )
            services.append(_ServicePlan(service, tuple(backends)))
        services.sort(key=lambda sp: sp.service.name)
        return cls(node_id, config_revision, _timeouts(view.timeouts), tuple(services), tuple(skipped))

    def evaluate(self, health: Mapping[str, HealthEntry], previous: DesiredState | None = None) -> DesiredState:
        """The desired state for ``health``. A service whose backends come out as in ``previous``
        is that very object, so comparing states and :func:`delta` skip it at once."""
        prev = {s.name: s for s in previous.services} if previous is not None else {}
        services: list[FwdService] = []
        for sp in self.services:
            out: list[FwdBackend] = []
            for bp in sp.backends:
                if bp.fixed is not None:
                    out.append(bp.fixed)
                    continue
                entry = health.get(bp.key) if bp.key is not None else None
                if entry is not None and entry.state != BackendState.DOWN:
                    out.append(bp.active)  # the common case, without building anything
                    continue
                healthy, reason = backend_health(entry, bp.initial)
                a = bp.active
                out.append(a if healthy else FwdBackend(a.address, a.port, a.weight, "draining", reason))
            backends = tuple(out)
            old = prev.get(sp.service.name)
            if old is not None and old.backends == backends and old.line() == sp.service.line():
                services.append(old)
            elif backends == sp.service.backends:
                services.append(sp.service)
            else:
                services.append(dataclasses.replace(sp.service, backends=backends))
        return DesiredState(
            node=self.node,
            config_revision=self.config_revision,
            timeouts=self.timeouts,
            services=tuple(services),
            skipped=self.skipped,
        )


def render(state: DesiredState, generation: int) -> str:
    """The full ``vgw-config 1`` document for ``state``."""
    out = ["vgw-config 1", f"generation {generation}"]
    out += [f"timeout {k} {v}" for k, v in state.timeouts]
    for s in state.services:
        out.append(f"service {s.header()}")
        out += [f"lip {s.name} {a}" for a in s.lips]
        out += [f"backend {s.name} {b.address} {b.port} {b.weight} {b.state}" for b in s.backends]
    out.append("end")
    return "\n".join(out) + "\n"


def delta(old: DesiredState, new: DesiredState, generation: int) -> tuple[str, int] | None:
    """The ``vgw-delta 1`` document from ``old`` to ``new`` and its number of operations, or None
    when a full apply is needed. (0 operations: nothing to change.)"""
    if old.timeouts != new.timeouts:
        return None
    ops: list[str] = []
    olds = {s.name: s for s in old.services}
    news = {s.name: s for s in new.services}
    for name in sorted(olds.keys() - news.keys()):
        ops.append(f"service remove {name}")
    for name in sorted(news):
        n = news[name]
        o = olds.get(name)
        if o is n:
            continue  # the same object (NodePlan.evaluate reuses unchanged services): nothing to compare
        if o is not None and o.header() != n.header():
            ops.append(f"service remove {name}")
            o = None
        if o is None:
            ops.append(f"service add {n.header()}")
            ops += [f"lip add {name} {a}" for a in n.lips]
            ops += [f"backend add {name} {b.address} {b.port} {b.weight} {b.state}" for b in n.backends]
            continue
        for a in sorted(set(n.lips) - set(o.lips)):
            ops.append(f"lip add {name} {a}")
        for a in sorted(set(o.lips) - set(n.lips)):
            ops.append(f"lip remove {name} {a}")
        ob = {(b.address, b.port): b for b in o.backends}
        nb = {(b.address, b.port): b for b in n.backends}
        for k in sorted(ob.keys() - nb.keys()):
            ops.append(f"backend remove {name} {k[0]} {k[1]}")
        for k, b in nb.items():
            prev = ob.get(k)
            if prev is None:
                ops.append(f"backend add {name} {b.address} {b.port} {b.weight} {b.state}")
                continue
            if prev.weight != b.weight:
                ops.append(f"backend weight {name} {b.address} {b.port} {b.weight}")
            if prev.state != b.state:
                ops.append(f"backend state {name} {b.address} {b.port} {b.state}")
    doc = "\n".join(["vgw-delta 1", f"generation {generation}", *ops, "end"]) + "\n"
    return doc, len(ops)
