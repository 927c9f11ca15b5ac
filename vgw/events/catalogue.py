"""The catalogue of VGW events: the public contract other systems subscribe to.

Each event carries the identifiers and the reason a subscriber needs to act on it without another
lookup. Adding an optional field is compatible; anything else needs a new ``.v2`` type.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vgw.naming import endpoint_token

from .base import Event, IPAddress, Name, Port, Text, vip_token

Protocol = Literal["tcp", "udp"]
Count = Annotated[int, Field(ge=0)]
Revision = Annotated[int, Field(ge=0, description="A config store revision (bucket-wide, increasing)")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Part):
    address: IPAddress
    port: Port

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


# --- config ---------------------------------------------------------------------------------------


class ConfigAction(StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"
    BACKEND_STATE = "backend_state"
    NODE_STATE = "node_state"


class ChangeCounts(_Part):
    added: Count = 0
    removed: Count = 0
    modified: Count = 0


class ConfigChanged(Event):
    """A new configuration revision was committed to the store."""

    name = "config.changed"
    summary = "A new configuration revision was committed (apply, rollback or a state change)."

    revision: Revision
    previous_revision: Revision | None = None
    action: ConfigAction
    actor: Annotated[str, Field(max_length=256, description="Who made the change")]
    reason: Text = ""
    rolled_back_to: Revision | None = None
    counts: ChangeCounts = ChangeCounts()
    changed: Annotated[
        list[Annotated[str, Field(max_length=256)]],
        Field(max_length=1000, description="Paths of changed objects, e.g. 'services/web-http'"),
    ] = []
    changed_truncated: bool = False

    def ce_subject(self) -> str:
        return f"revision/{self.revision}"


# --- health ---------------------------------------------------------------------------------------


class CheckKind(StrEnum):
    TCP = "tcp"
    TCP_SEND_EXPECT = "tcp_send_expect"
    UDP = "udp"
    HTTP = "http"
    HTTPS = "https"
    GRPC = "grpc"


class ProbeResult(StrEnum):
    """Why a probe succeeded or failed; the reason carried by backend up/down events."""

    OK = "ok"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    RESET = "reset"
    UNREACHABLE = "unreachable"
    STATUS = "status"
    BODY_MISMATCH = "body_mismatch"
    EXPECT_MISMATCH = "expect_mismatch"
    TLS_ERROR = "tls_error"
    PROTOCOL_ERROR = "protocol_error"
    NOT_SERVING = "not_serving"
    ERROR = "error"


class BackendState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class _BackendTransition(Event):
    subject_params = ("service", "backend")

    service: Name
    vip: IPAddress
    port: Port
    protocol: Protocol
    backend: Endpoint
    check: Name
    check_kind: CheckKind
    previous_state: BackendState
    reason: ProbeResult
    detail: Text = ""
    last_latency_ms: Annotated[float, Field(ge=0)] | None = None
    consecutive: Annotated[int, Field(ge=0, description="Consecutive results that caused the transition")]
    checker: Annotated[str, Field(max_length=128, description="Health checker instance id")]

    def subject_tokens(self) -> tuple[str, ...]:
        return (self.service, endpoint_token(self.backend.address, self.backend.port))

    def ce_subject(self) -> str:
        return f"service/{self.service}/backend/{self.backend}"


class BackendUp(_BackendTransition):
    """A backend passed ``rise`` consecutive probes of a check and is up."""

    name = "backend.up"
    summary = "A backend became healthy for a service (rise consecutive successes)."


class BackendDown(_BackendTransition):
    """A backend failed ``fall`` consecutive probes of a check and is down."""

    name = "backend.down"
    summary = "A backend became unhealthy for a service (fall consecutive failures), with the reason."


# --- dataplane ------------------------------------------------------------------------------------


class ForwarderState(StrEnum):
    UP = "up"
    DOWN = "down"
    STARTING = "starting"


class DataplaneStatus(Event):
    """Heartbeat of a node's forwarder, published by its shim every second."""

    name = "dataplane.status"
    subject_params = ("node",)
    summary = "Heartbeat of a node's forwarder: liveness, applied revision and programmed VIPs."

    node: Name
    seq: Annotated[int, Field(ge=0, description="Heartbeat sequence, restarts at 0 with the shim")]
    interval_s: Annotated[float, Field(gt=0)]
    forwarder: ForwarderState
    forwarder_started_at: datetime | None = None
    generation: Annotated[int, Field(ge=0, description="Forwarder state generation applied")] = 0
    config_revision: Revision | None = None
    vips: Annotated[list[IPAddress], Field(max_length=65536)] = []
    services: Count = 0
    last_apply_error: Text | None = None
    active_connections: Count | None = Field(
        default=None,
        description="Connections in the forwarder's tables, every state (STATS conn_active); none while the "
        "forwarder is not connected or has not been read yet",
    )
    half_open_connections: Count | None = Field(
        default=None, description="Of those, TCP connections with only the client's SYN seen (STATS conn_halfopen)"
    )
    conn_state_kept: bool | None = Field(
        default=None,
        description="The forwarder keeps its connection tables across a restart (STATS conn_state.enabled); "
        "while it is down, what it last said; none before it was read",
    )

    def subject_tokens(self) -> tuple[str, ...]:
        return (self.node,)

    def ce_subject(self) -> str:
        return f"node/{self.node}"


# --- route control --------------------------------------------------------------------------------


class RouteState(StrEnum):
    ANNOUNCED = "announced"
    DEPRIORITISED = "deprioritised"
    WITHDRAWN = "withdrawn"


class RouteReason(StrEnum):
    GATES_OK = "gates_ok"
    FORWARDER_DOWN = "forwarder_down"
    FORWARDER_STALE = "forwarder_stale"
    NOT_PROGRAMMED = "not_programmed"
    BELOW_LOW_WATERMARK = "below_low_watermark"
    NODE_ISOLATED = "node_isolated"
    NODE_DRAINING = "node_draining"
    NODE_DRAINED = "node_drained"
    VIP_DISABLED = "vip_disabled"
    NODE_WITHDRAW_REQUEST = "node_withdraw_request"
    CLUSTER_WITHDRAW_REQUEST = "cluster_withdraw_request"
    DAMPED = "damped"
    SHUTDOWN = "shutdown"
    REMOVED = "removed"


class BgpAttributes(_Part):
    next_hop: IPAddress | None = None
    med: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    local_pref: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    communities: Annotated[list[Annotated[str, Field(pattern=r"^\d+:\d+$")]], Field(max_length=64)] = []
    as_path_prepend: Annotated[int, Field(ge=0, le=16)] = 0


class _VipDecision(Event):
    subject_params = ("vip", "node")

    node: Name
    vip: IPAddress
    state: RouteState
    previous_state: RouteState | None = None
    reason: RouteReason
    detail: Text = ""
    attributes: BgpAttributes = BgpAttributes()
    healthy_backends: Count = 0
    total_backends: Count = 0
    config_revision: Revision | None = None
    cause_event_id: Annotated[str, Field(max_length=256)] | None = None

    def subject_tokens(self) -> tuple[str, ...]:
        return (vip_token(self.vip), self.node)

    def ce_subject(self) -> str:
        return f"vip/{self.vip}/node/{self.node}"


class VipAnnounce(_VipDecision):
    """A node announces a VIP (normally, or deprioritised with worse attributes)."""

    name = "vip.announce"
    summary = "A node announces a VIP over BGP (normal or deprioritised), with the attributes and reason."


class VipWithdraw(_VipDecision):
    """A node withdraws a VIP."""

    name = "vip.withdraw"
    summary = "A node withdraws a VIP from BGP, with the reason."


# --- node drains ----------------------------------------------------------------------------------


class DrainEndReason(StrEnum):
    IDLE = "idle"
    """The node's connections fell below the threshold."""
    TIMEOUT = "timeout"
    """The drain's timeout passed first."""
    CANCELLED = "cancelled"
    """The node was restored (or isolated, or removed) before the drain completed."""


class _NodeDrain(Event):
    subject_params = ("node",)

    node: Name
    cluster: Name
    started_at: datetime = Field(description="When the drain started (the config's drain.started_at)")
    deadline: datetime = Field(description="started_at + timeout: the node is withdrawn by then at the latest")
    timeout_s: Annotated[float, Field(ge=0)]
    threshold: Count = Field(description="The node is idle once it has fewer connections than this")
    active_connections: Count | None = Field(
        default=None, description="The node's connections (half-open ones not counted) when this happened"
    )
    vips: Count = Field(default=0, description="VIPs of the node")
    config_revision: Revision | None = None
    cause_event_id: Annotated[str, Field(max_length=256)] | None = None

    def subject_tokens(self) -> tuple[str, ...]:
        return (self.node,)

    def ce_subject(self) -> str:
        return f"node/{self.node}"


class NodeDrainStarted(_NodeDrain):
    """A node's route control started draining it: its VIPs are announced with the deprioritised
    attributes until it is idle or the timeout passes."""

    name = "node.drain.started"
    summary = "Route control started draining a node (VIPs deprioritised until idle or timeout)."


class NodeDrainCompleted(_NodeDrain):
    """A node's drain ended: idle or timed out (its VIPs are withdrawn), or cancelled (restored)."""

    name = "node.drain.completed"
    summary = "A node's drain ended: idle or timeout (VIPs withdrawn), or cancelled before that."

    reason: DrainEndReason
    duration_s: Annotated[float, Field(ge=0)] = Field(description="From started_at to now")
    detail: Text = ""


# --- monitor --------------------------------------------------------------------------------------


class VipHealth(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class ProbeEvidence(_Part):
    vantage: Annotated[str, Field(max_length=128)]
    node: Name | None = Field(default=None, description="Node the probes were steered through; none = routed path")
    probes: Count
    successes: Count
    errors: Annotated[dict[str, Count], Field(max_length=32)] = {}
    p50_ms: Annotated[float, Field(ge=0)] | None = None
    p99_ms: Annotated[float, Field(ge=0)] | None = None


class MonitorVipStatus(Event):
    """The monitor's end-to-end view of a VIP changed."""

    name = "monitor.vip.status"
    subject_params = ("vip",)
    summary = "The end-to-end status of a VIP as seen from the monitor's vantage points changed."

    vip: IPAddress
    port: Port
    protocol: Protocol
    status: VipHealth
    previous_status: VipHealth | None = None
    monitor: Annotated[str, Field(max_length=128)]
    detail: Text = ""
    evidence: Annotated[list[ProbeEvidence], Field(max_length=256)] = []

    def subject_tokens(self) -> tuple[str, ...]:
        return (vip_token(self.vip),)

    def ce_subject(self) -> str:
        return f"vip/{self.vip}:{self.port}/{self.protocol}"


class RequestAction(StrEnum):
    WITHDRAW = "withdraw"
    RESTORE = "restore"


class _WithdrawRequest(Event):
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    action: RequestAction
    vip: IPAddress | None = Field(default=None, description="The VIP concerned; none means every VIP")
    requester: Annotated[
        str,
        Field(
            max_length=128,
            pattern=r"^(operator|monitor)/[A-Za-z0-9][A-Za-z0-9_.@-]{0,100}$",
            description="'monitor/<vantage>' or 'operator/<name>'. The kind before the slash is also the last "
            "token of the subject, which NATS permits only that kind's identities to publish",
        ),
    ]
    reason: Text
    evidence: Annotated[list[ProbeEvidence], Field(max_length=256)] = []
    expires_at: datetime | None = Field(default=None, description="The request lapses by itself at this time")

    @property
    def requester_kind(self) -> str:
        """``operator`` or ``monitor``: who may publish it (the subject's last token)."""
        return self.requester.split("/", 1)[0]


class NodeWithdrawRequest(_WithdrawRequest):
    """Ask route control to withdraw (or restore) a node's announcement of a VIP."""

    name = "request.node.withdraw"
    subject_params = ("node", "vip", "requester_kind")
    summary = "A request (monitor or operator) to withdraw or restore one node's announcement of a VIP."

    node: Name

    def subject_tokens(self) -> tuple[str, ...]:
        return (self.node, vip_token(self.vip), self.requester_kind)

    def ce_subject(self) -> str:
        return f"node/{self.node}/vip/{self.vip or 'all'}"


class ClusterWithdrawRequest(_WithdrawRequest):
    """Ask route control to withdraw (or restore) a whole cluster's announcement of a VIP."""

    name = "request.cluster.withdraw"
    subject_params = ("cluster", "vip", "requester_kind")
    summary = "A request to withdraw or restore a whole cluster's announcement of a VIP (fail over to standby)."

    cluster: Name
    standby_cluster: Name | None = None

    def subject_tokens(self) -> tuple[str, ...]:
        return (self.cluster, vip_token(self.vip), self.requester_kind)

    def ce_subject(self) -> str:
        return f"cluster/{self.cluster}/vip/{self.vip or 'all'}"
