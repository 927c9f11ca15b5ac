"""VGW's NATS identities and their permission matrix, as data.

Every VGW process connects with its own identity (an nkey plus a client certificate). The matrix
below is the single source of the NATS server's ``authorization`` block (:mod:`.natsconf`) and of
the table in docs/security.md (:mod:`.docs`), so the documentation cannot drift from what is
enforced.

Each identity gets only what its process does: the KV buckets it reads, the keys it writes, the
streams it may create, and the event subjects it publishes. Subjects come from the constants the
services use (bucket names, ``Event.subject_base()``), never from string literals repeated here.
Nobody gets ``$JS.API.>`` wholesale, nor stream delete/purge/update: those stay with an
administrator using the NATS system tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vgw.bgp import BGP_BUCKET
from vgw.bus import EVENT_STREAM
from vgw.config.store import BUCKET as CONFIG_BUCKET
from vgw.events import (
    BackendDown,
    BackendUp,
    ClusterWithdrawRequest,
    ConfigChanged,
    DataplaneStatus,
    MonitorVipStatus,
    NodeDrainCompleted,
    NodeDrainStarted,
    NodeWithdrawRequest,
    VipAnnounce,
    VipWithdraw,
)
from vgw.events.base import SUBJECT_ROOT
from vgw.health import HEALTH_BUCKET
from vgw.lease import MONITOR_LEASE_BUCKET
from vgw.monitoring import MONITOR_BUCKET, OBS_BUCKET
from vgw.naming import check_name
from vgw.routes import ROUTES_BUCKET
from vgw.traffic import TRAFFIC_BUCKET
from vgw.withdraw_requests import REQUESTS_BUCKET, WITHDRAWALS_BUCKET

# services/healthcheck/main.py's default (a test checks they agree); vgw/ must not import services/.
HC_MEMBERS_BUCKET = "vgw_hc_members"

JS_API = "$JS.API"
INBOX_PREFIX = "_INBOX_"

# Config API roles (cert OU / token role). Services have no API role: their OU is "service".
API_SERVICE = "service"
API_READER = "reader"
API_OPERATOR = "operator"
API_ADMIN = "admin"
API_ROLES = (API_READER, API_OPERATOR, API_ADMIN)

# Withdraw-request kinds: the token after the VIP in a request subject, and the part of the
# request's ``requester`` before the "/". routectl rejects a request whose two kinds differ.
KIND_OPERATOR = "operator"
KIND_MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Grants:
    """What one identity may do, in VGW's terms; :func:`nats_permissions` turns it into subjects."""

    reads: tuple[str, ...] = ()
    """KV buckets it reads (get and watch)."""
    writes: tuple[tuple[str, str], ...] = ()
    """(bucket, key pattern) it writes: put, create, update, delete and purge are all publishes."""
    creates: tuple[str, ...] = ()
    """Streams it may create if missing: its own buckets' ``KV_<bucket>`` and the event stream."""
    events: bool = False
    """Reads the event stream through JetStream consumers (replay, resume after a reconnect)."""
    core_events: bool = False
    """Also subscribes to ``vgw.v1.>`` over core NATS (queue groups, live tails)."""
    live_events: tuple[str, ...] = ()
    """Event subjects (patterns) it subscribes to over core NATS: liveness signals it must get
    even while the event stream cannot deliver (``Bus.subscribe(live=True)``)."""
    publishes: tuple[str, ...] = ()
    """Event subjects (patterns) it publishes."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    """The NATS user and certificate CN, e.g. ``routectl-node-a``."""
    kind: str
    """The role: config, healthcheck, monitor, routectl, shim, operator, admin, subscriber."""
    api_role: str
    """Config API role, the certificate's OU: reader, operator, admin, or "service"."""
    summary: str
    grants: Grants = field(default_factory=Grants)
    node: str | None = None

    @property
    def inbox_prefix(self) -> str:
        return f"{INBOX_PREFIX}{self.name}"

    @property
    def has_api_token(self) -> bool:
        return self.api_role in API_ROLES


# The monitor's single-writer state: its leader's lease, the requests in force, the withdrawals
# of the last minute (the rate limit's count).
_MONITOR_OWN = (MONITOR_LEASE_BUCKET, REQUESTS_BUCKET, WITHDRAWALS_BUCKET)


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _requests(kind: str) -> tuple[str, ...]:
    # <base>.<node|cluster>.<vip-token>.<kind>: the kind token pins who may ask.
    return tuple(f"{t.subject_base()}.*.*.{kind}" for t in (NodeWithdrawRequest, ClusterWithdrawRequest))


def _service(*creates: str) -> tuple[str, ...]:
    # Every service process makes sure the event stream exists at start (vgw/runtime.py).
    return (*creates, EVENT_STREAM)


def identities(nodes: Iterable[str], *, check: bool = True) -> list[Identity]:
    """Every identity of a deployment with these nodes, in a stable order.

    ``check=False`` lets the documentation use a placeholder such as ``<node>``.
    """
    node_list = sorted({check_name(n) if check else n for n in nodes})
    ops = Grants(
        reads=(ROUTES_BUCKET, MONITOR_BUCKET, HEALTH_BUCKET, TRAFFIC_BUCKET, BGP_BUCKET, REQUESTS_BUCKET),
        events=True,
        core_events=True,
        publishes=_requests(KIND_OPERATOR),
    )
    out = [
        Identity(
            "config",
            "config",
            API_SERVICE,
            "The config service: the only writer of the configuration.",
            Grants(
                reads=(CONFIG_BUCKET,),
                writes=((CONFIG_BUCKET, ">"),),
                creates=_service(kv_stream(CONFIG_BUCKET)),
                publishes=(ConfigChanged.subject_filter(),),
            ),
        ),
        Identity(
            "healthcheck",
            "healthcheck",
            API_SERVICE,
            "Health checkers: probe backends, write health, publish backend up/down.",
            Grants(
                reads=(CONFIG_BUCKET, HEALTH_BUCKET, HC_MEMBERS_BUCKET),
                writes=((HEALTH_BUCKET, ">"), (HC_MEMBERS_BUCKET, ">")),
                creates=_service(kv_stream(HEALTH_BUCKET), kv_stream(HC_MEMBERS_BUCKET)),
                publishes=(BackendUp.subject_filter(), BackendDown.subject_filter()),
            ),
        ),
        Identity(
            "monitor",
            "monitor",
            API_SERVICE,
            "The end-to-end monitor: probes VIPs, may ask for a withdraw (kind monitor).",
            Grants(
                # routes: the per-VIP count of announcing nodes (vgw_vip_announcing_nodes); the
                # leader's lease, its requests in force and the rate limit's withdrawals are its own.
                reads=(CONFIG_BUCKET, MONITOR_BUCKET, OBS_BUCKET, ROUTES_BUCKET, *_MONITOR_OWN),
                writes=((MONITOR_BUCKET, ">"), (OBS_BUCKET, ">"), *((b, ">") for b in _MONITOR_OWN)),
                creates=_service(kv_stream(MONITOR_BUCKET), kv_stream(OBS_BUCKET), *map(kv_stream, _MONITOR_OWN)),
                publishes=(MonitorVipStatus.subject_filter(), *_requests(KIND_MONITOR)),
            ),
        ),
    ]
    for node in node_list:
        out.append(
            Identity(
                f"routectl-{node}",
                "routectl",
                API_SERVICE,
                f"Route control of node {node}: announces and withdraws only this node's VIPs.",
                Grants(
                    # All nodes' routes: the last-announcer guard looks at the others' decisions.
                    # Requests in force: read at start (vgw/withdraw_requests.py).
                    reads=(CONFIG_BUCKET, HEALTH_BUCKET, ROUTES_BUCKET, BGP_BUCKET, REQUESTS_BUCKET),
                    writes=((ROUTES_BUCKET, f"{node}.>"), (BGP_BUCKET, node)),
                    creates=_service(kv_stream(ROUTES_BUCKET), kv_stream(BGP_BUCKET)),
                    events=True,
                    live_events=(f"{DataplaneStatus.subject_base()}.{node}",),
                    publishes=(
                        f"{VipAnnounce.subject_base()}.*.{node}",
                        f"{VipWithdraw.subject_base()}.*.{node}",
                        f"{NodeDrainStarted.subject_base()}.{node}",
                        f"{NodeDrainCompleted.subject_base()}.{node}",
                    ),
                ),
                node=node,
            )
        )
    for node in node_list:
        out.append(
            Identity(
                f"shim-{node}",
                "shim",
                API_SERVICE,
                f"The forwarder's shim on node {node}: programs it, publishes its heartbeat and traffic.",
                Grants(
                    reads=(CONFIG_BUCKET, HEALTH_BUCKET, TRAFFIC_BUCKET),
                    writes=((TRAFFIC_BUCKET, node),),
                    creates=_service(kv_stream(TRAFFIC_BUCKET)),
                    publishes=(f"{DataplaneStatus.subject_base()}.{node}",),
                ),
                node=node,
            )
        )
    out += [
        Identity("operator", "operator", API_OPERATOR, "A person or tool operating VGW (vgwctl).", ops),
        Identity("admin", "admin", API_ADMIN, "Like operator on NATS; admin on the config API.", ops),
        Identity(
            "subscriber",
            "subscriber",
            API_READER,
            "A read-only consumer of events (dashboards, audit, other systems).",
            Grants(reads=(REQUESTS_BUCKET,), events=True, core_events=True),
        ),
    ]
    return out


def _kv_read(bucket: str) -> list[str]:
    s = kv_stream(bucket)
    return [
        f"{JS_API}.STREAM.INFO.{s}",
        f"{JS_API}.STREAM.MSG.GET.{s}",
        f"{JS_API}.DIRECT.GET.{s}",
        f"{JS_API}.DIRECT.GET.{s}.>",
        *_consumers(s),
    ]


def _consumers(stream: str) -> list[str]:
    # Watches and event subscriptions are ordered push consumers: created (ephemeral, with or
    # without name/filter tokens), re-created after a gap, deleted at the end; the server asks
    # for flow control on $JS.FC.<stream>.> and the client must answer there.
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def nats_permissions(identity: Identity) -> tuple[list[str], list[str]]:
    """The (publish allow, subscribe allow) subject lists of an identity, without duplicates."""
    g = identity.grants
    pub: list[str] = []
    for bucket in g.reads:
        pub += _kv_read(bucket)
    pub += [f"$KV.{bucket}.{keys}" for bucket, keys in g.writes]
    pub += [f"{JS_API}.STREAM.CREATE.{s}" for s in g.creates]
    if g.events or g.creates:
        # Services check the event stream exists at start; subscribers read its position.
        pub.append(f"{JS_API}.STREAM.INFO.{EVENT_STREAM}")
    if g.events:
        pub += _consumers(EVENT_STREAM)
    pub += g.publishes
    sub = [f"{identity.inbox_prefix}.>"]
    if g.core_events:
        sub.append(f"{SUBJECT_ROOT}.>")
    sub += g.live_events
    return _unique(pub), _unique(sub)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def find(idents: Iterable[Identity], name: str) -> Identity:
    for i in idents:
        if i.name == name:
            return i
    raise KeyError(name)
