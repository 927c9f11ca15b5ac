"""The VGW configuration model, shared by every service.

One :class:`ConfigDocument` describes a whole deployment: clusters, nodes (interfaces, LIP pool,
BGP), health checks, and VIPs with their BGP policy, monitor probes and services, each service with
its backends. The YAML form (``docs/config-example.yaml``) is the declarative format operators
apply; the config service validates it (:mod:`vgw.config.validate`), stores it in JetStream KV
(:mod:`vgw.config.store`) and every other service reads it back as this model.

Structural rules (types, ranges, unknown fields) live on the models here; rules that relate
objects to each other (references, duplicates, overlaps, limits per node) live in
:mod:`vgw.config.validate`. A document read from the store has passed both.

Helpers for consumers:

* :func:`node_view` -- what one node serves: its VIPs (as primary or standby), services, backends
  and LIPs. The forwarder shim programs exactly this.
* :func:`health_key` / :func:`health_targets` -- one health probe per (backend address, port,
  check), shared by every service that uses it, keyed by a stable KV-safe string.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vgw.naming import endpoint_token

from .types import (
    ASN,
    IP,
    ByteQuantity,
    Community,
    Duration,
    IPAddress,
    IPInterface,
    IPNetwork,
    IPv4,
    LipEntry,
    Name,
    Port,
    StatusRange,
    Text,
    Watermark,
    format_bytes,
    watermark_count,
)

SCHEMA_VERSION: Literal[1] = 1


class Limits:
    """Size limits every document must respect (validated; see docs/config.md)."""

    DOCUMENT_BYTES = 32 * 1024 * 1024
    """Largest document accepted, as YAML or JSON text."""
    YAML_NODES = 5_000_000
    """Largest document after YAML alias expansion (stops alias bombs)."""
    CLUSTERS = 64
    NODES = 512
    HEALTH_CHECKS = 4096
    VIPS = 8192
    SERVICES_PER_VIP = 1024
    SERVICES = 65536
    BACKENDS_PER_SERVICE = 4096
    BACKENDS = 1_000_000
    PEERS_PER_NODE = 16
    LIP_ENTRIES = 64
    LIPS_PER_NODE = 256
    """The forwarder takes at most 256 LIPs per service."""
    NODE_SERVICES = 4096
    """Services one node's forwarder can hold (dataplane limit)."""
    NODE_BACKENDS = 65536
    """Backends one node's forwarder can hold in total (dataplane limit)."""
    MONITOR_PROBES_PER_VIP = 16
    COMMUNITIES = 32
    WORKERS = 128
    """Worker lcores of one forwarder."""
    CONN_CAPACITY_MIN = 1024
    CONN_CAPACITY_MAX = 1 << 28
    """Connections per worker (the forwarder's bounds for ``conn-capacity``)."""
    MEMORY_BUDGET_MIN = 64 << 20
    MEMORY_BUDGET_MAX = 1 << 40
    """Bounds of a node's forwarder memory budget (64 MiB .. 1 TiB)."""
    MAX_RATE = 100_000_000
    """Upper bound of every flood-protection rate and threshold (the forwarder's ``VGW_MAX_RATE``)."""
    LIP_PORTS = 65535 - 1024 + 1
    """Connections one LIP can have open to one backend (address, port) at a time: one per source port,
    and the forwarder allocates ports 1024-65535."""
    EXPECTED_CONNECTIONS_MAX = CONN_CAPACITY_MAX * WORKERS
    """Largest ``expected_connections`` of a service (what the largest forwarder could hold)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- clusters and nodes ---------------------------------------------------------------------------


CONN_SYNC_DEFAULT_PORT = 8473


class ConnSync(_Model):
    """Connection sync between the cluster's forwarders (docs/forwarder.md, "Connection sync"): each
    node sends its connections to the others over the internal network, so a node that gets a flow
    after an ECMP change (a withdrawn, drained or failed node) carries it on."""

    enabled: bool = Field(default=False, description="Send and accept connection sync between the cluster's nodes")
    port: Annotated[int, Field(ge=1024, le=65535)] = Field(
        default=CONN_SYNC_DEFAULT_PORT, description="UDP port of the sync datagrams on the internal network"
    )


class Cluster(_Model):
    """A group of nodes that announce the same VIPs to the same routers (ECMP)."""

    name: Name
    standby: Name | None = Field(
        default=None,
        description="Standby cluster for cluster-level failover of this cluster's VIPs; its nodes program "
        "the VIPs too and announce them with the VIP's `standby` BGP attributes",
    )
    description: Text = ""
    conn_sync: ConnSync = Field(
        default_factory=ConnSync,
        description="Connection sync between the nodes (off by default: it needs a shared key on every node)",
    )


class PortConfig(_Model):
    """One forwarder port (external = towards clients and routers, internal = towards backends)."""

    address: IPInterface = Field(description="The node's own address on this port, with prefix, e.g. 192.0.2.11/24")
    gateway: IPAddress | None = Field(default=None, description="Next hop for destinations off this subnet")
    device: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="DPDK device (PCI address or vdev) or kernel interface; informational"
    )
    mtu: Annotated[int, Field(ge=576, le=9216)] = 1500


class StaticRoute(_Model):
    prefix: IPNetwork
    via: IPAddress
    port: Literal["external", "internal"] = "internal"


class BgpPeer(_Model):
    address: IPAddress
    asn: ASN
    port: Port = 179
    hold_time: Annotated[int, Field(ge=0, le=65535, description="Seconds; 0 or 3-65535")] = 90
    password: Annotated[str, Field(min_length=1, max_length=80, description="TCP-MD5 key")] | None = None
    local_address: IPAddress | None = None
    multihop: Annotated[int, Field(ge=1, le=255)] | None = None
    description: Text = ""


class NodeBgp(_Model):
    asn: ASN = Field(description="The node's local AS number")
    router_id: IPv4
    next_hop: IPAddress | None = Field(
        default=None,
        description="Next hop announced; default the external address (VIPs of the other family: the session's own)",
    )
    peers: Annotated[list[BgpPeer], Field(min_length=1, max_length=Limits.PEERS_PER_NODE)]


def _budget_in_range(v: int) -> int:
    if not Limits.MEMORY_BUDGET_MIN <= v <= Limits.MEMORY_BUDGET_MAX:
        raise PydanticCustomError(
            "memory_budget",
            f"a memory budget of {v} bytes ({format_bytes(v)}) is out of range: "
            f"{format_bytes(Limits.MEMORY_BUDGET_MIN)} to {format_bytes(Limits.MEMORY_BUDGET_MAX)}",
        )
    return v


MemoryBudget = Annotated[ByteQuantity, AfterValidator(_budget_in_range)]

DEFAULT_MEMORY_BUDGET = 512 << 20
"""512 MiB: the forwarder container's memory limit in the Helm chart (``node.forwarder.resources``)."""


class ForwarderSettings(_Model):
    """The node's forwarder (vgw-fwd): workers, connection tables and the memory it may use.

    ``python -m dataplane.shim.fwdargs`` writes these into vgw-fwd's settings file; validation
    refuses a document whose services would need more than ``memory_budget`` on this node
    (:mod:`vgw.config.budget`)."""

    workers: Annotated[int, Field(ge=1, le=Limits.WORKERS)] = Field(
        default=1, description="Worker lcores; each has its own connection table"
    )
    conn_capacity: Annotated[int, Field(ge=Limits.CONN_CAPACITY_MIN, le=Limits.CONN_CAPACITY_MAX)] = Field(
        default=262144, description="Connections per worker (the size of each worker's connection table)"
    )
    memory_budget: MemoryBudget = Field(
        default=DEFAULT_MEMORY_BUDGET,
        description="Memory the forwarder may use, in bytes or as a quantity such as 512Mi, 2Gi, 800M (64Mi-1Ti; "
        "packet buffers in hugepages are not counted). Match the forwarder's memory limit (Helm: "
        "node.forwarder.resources.limits.memory)",
    )


def _parse_timestamp(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise PydanticCustomError(
                "timestamp", "expected an ISO 8601 time with a time zone, e.g. 2026-12-01T11:30:00Z"
            ) from None
    if not isinstance(v, datetime):
        raise PydanticCustomError("timestamp", "expected an ISO 8601 time with a time zone")
    if v.tzinfo is None:
        raise PydanticCustomError("timestamp", "the time needs a time zone (e.g. a trailing Z)")
    return v.astimezone(UTC)


Timestamp = Annotated[
    datetime,
    PlainValidator(_parse_timestamp),
    PlainSerializer(lambda t: t.isoformat().replace("+00:00", "Z"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

DRAIN_TIMEOUT_MIN_S = 1.0
DRAIN_TIMEOUT_MAX_S = 86400.0
DRAIN_TIMEOUT_DEFAULT_S = 300.0
DRAIN_THRESHOLD_DEFAULT = 1


def _drain_timeout_in_range(v: float) -> float:
    if not DRAIN_TIMEOUT_MIN_S <= v <= DRAIN_TIMEOUT_MAX_S:
        raise PydanticCustomError("drain_timeout", f"a drain timeout of {v:g}s is out of range: 1s to 24h (86400s)")
    return v


class NodeDrain(_Model):
    """A drain in progress (docs/routectl.md, "Drain"): route control announces the node's VIPs with the
    deprioritised attributes until its forwarder's connections fall below ``threshold`` or ``timeout``
    has passed since ``started_at``, then withdraws them. Written by the config service
    (``SetNodeState``), so it is in the history with the actor."""

    started_at: Timestamp = Field(description="When the drain started (the config service's clock, UTC)")
    timeout: Annotated[Duration, AfterValidator(_drain_timeout_in_range)] = Field(
        default=DRAIN_TIMEOUT_DEFAULT_S, description="Withdraw at the latest this long after started_at (1s-24h)"
    )
    threshold: Annotated[int, Field(ge=0, le=Limits.EXPECTED_CONNECTIONS_MAX)] = Field(
        default=DRAIN_THRESHOLD_DEFAULT,
        description="The node is idle (and withdrawn) once its forwarder has fewer connections than this "
        "(half-open ones not counted); 1 = none left, 0 = always wait for the timeout",
    )

    @property
    def deadline(self) -> datetime:
        return self.started_at + timedelta(seconds=self.timeout)


class Node(_Model):
    id: Name
    cluster: Name
    mode: Literal["dual_arm", "single_arm"] = Field(
        default="dual_arm",
        description="dual_arm: clients on `external`, backends on `internal`; single_arm: both on `external`",
    )
    external: PortConfig
    internal: PortConfig | None = Field(default=None, description="Required in dual_arm mode, absent in single_arm")
    lip_pool: Annotated[list[LipEntry], Field(min_length=1, max_length=Limits.LIP_ENTRIES)] = Field(
        description="Local addresses used as FULLNAT sources towards backends: addresses and/or CIDR prefixes"
    )
    routes: Annotated[list[StaticRoute], Field(max_length=256)] = []
    bgp: NodeBgp | None = None
    state: Literal["active", "isolated", "draining"] = Field(
        default="active",
        description="isolated: route control withdraws every VIP from this node; draining: it announces them "
        "deprioritised until the node is idle or the drain times out, then withdraws them (`vgwctl node drain`)",
    )
    drain: NodeDrain | None = Field(
        default=None, description="The drain in progress; set (by `vgwctl node drain`) exactly while state is draining"
    )
    forwarder: ForwarderSettings = Field(
        default=ForwarderSettings(), description="The node's forwarder: workers, connection capacity, memory budget"
    )

    @model_validator(mode="after")
    def _drain_while_draining(self) -> Node:
        if self.state == "draining" and self.drain is None:
            raise PydanticCustomError(
                "drain", "state draining needs drain (started_at, timeout, threshold): use `vgwctl node drain`"
            )
        if self.state != "draining" and self.drain is not None:
            raise PydanticCustomError("drain", "drain is set only while state is draining")
        return self

    def lips(self) -> list[IP]:
        """Every LIP of the pool, in order (a prefix contributes its usable host addresses)."""
        out: list[IP] = []
        for net in self.lip_pool:
            if net.num_addresses > 2 * Limits.LIPS_PER_NODE:
                raise ValueError(f"LIP prefix {net} is larger than {Limits.LIPS_PER_NODE} addresses")
            out.extend(net.hosts() if net.num_addresses > 2 else net)
        return out

    @property
    def backend_port(self) -> PortConfig:
        """The port that faces the backends."""
        return self.internal if self.mode == "dual_arm" and self.internal is not None else self.external


# --- health checks --------------------------------------------------------------------------------

CheckKind = Literal["tcp", "tcp_send_expect", "udp", "http", "https", "grpc"]


class HttpParams(_Model):
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    path: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^/[\x21-\x7e]*$")] = "/"
    host: Annotated[str, Field(max_length=255, pattern=r"^[A-Za-z0-9.:\[\]_-]+$")] | None = Field(
        default=None, description="Host header and TLS SNI; default the backend address"
    )
    headers: Annotated[dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")], Text], Field(max_length=16)] = {}
    expected_status: Annotated[list[StatusRange], Field(min_length=1, max_length=16)] = ["200-399"]
    body_contains: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    tls_verify: bool = Field(default=True, description="Verify the server certificate (https only)")


class PayloadParams(_Model):
    """What a tcp_send_expect or udp check sends and expects back."""

    encoding: Literal["text", "hex"] = "text"
    send: Annotated[str, Field(max_length=4096)] = ""
    expect: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        default=None, description="Expected at the start of the reply; none = any reply (UDP) / connect is enough"
    )

    def send_bytes(self) -> bytes:
        return bytes.fromhex(self.send) if self.encoding == "hex" else self.send.encode()

    def expect_bytes(self) -> bytes | None:
        if self.expect is None:
            return None
        return bytes.fromhex(self.expect) if self.encoding == "hex" else self.expect.encode()


class GrpcParams(_Model):
    service: Annotated[str, Field(max_length=256)] = Field(default="", description="grpc.health.v1 service name")
    tls: bool = False
    tls_verify: bool = True
    authority: Annotated[str, Field(max_length=255)] | None = None


class HealthCheck(_Model):
    """A named health check, referenced by services (``health_check: NAME``)."""

    name: Name
    kind: CheckKind
    port: Port | None = Field(default=None, description="Port to probe; default each backend's own port")
    interval: Annotated[Duration, Field(ge=0.1, le=3600)] = 2.0
    timeout: Annotated[Duration, Field(ge=0.01, le=600)] = 1.0
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    fall: Annotated[int, Field(ge=1, le=100)] = 3
    jitter: Annotated[float, Field(ge=0, le=0.5, description="Random spread of each interval, as a fraction")] = 0.1
    fast_interval: Annotated[Duration, Field(ge=0.05, le=3600)] | None = Field(
        default=None, description="Interval while a backend is transitioning (between first change and rise/fall)"
    )
    initial_state: Literal["unknown", "up", "down"] = "unknown"
    http: HttpParams | None = Field(default=None, description="For http and https checks")
    payload: PayloadParams | None = Field(default=None, description="For tcp_send_expect (required) and udp checks")
    grpc: GrpcParams | None = Field(default=None, description="For grpc checks")

    def http_params(self) -> HttpParams:
        return self.http or HttpParams()

    def grpc_params(self) -> GrpcParams:
        return self.grpc or GrpcParams()


# --- VIPs, services, backends ---------------------------------------------------------------------


class Backend(_Model):
    address: IPAddress
    port: Port
    weight: Annotated[int, Field(ge=0, le=65535)] = 100
    state: Literal["enabled", "draining", "disabled"] = Field(
        default="enabled",
        description="draining: no new connections, existing ones continue; disabled: no new connections and "
        "not counted as healthy",
    )

    @property
    def key(self) -> str:
        """Identity inside a service: ``198.51.100.5:8080`` (``[2001:db8::5]:8080`` for IPv6)."""
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


class Timeouts(_Model):
    """Connection table timeouts per TCP state and for UDP (seconds, 1-86400); unset = the default."""

    tcp_established: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_syn_sent: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_syn_recv: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_fin_wait: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_time_wait: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_close: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_close_wait: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_last_ack: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_listen: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    tcp_synack: Annotated[Duration, Field(ge=1, le=86400)] | None = None
    udp: Annotated[Duration, Field(ge=1, le=86400)] | None = None

    def set_values(self) -> dict[str, int]:
        """The timeouts that are set, as whole seconds (the forwarder's unit)."""
        return {k: round(v) for k, v in self.model_dump(exclude_none=True).items()}


AUTO_HALF_OPEN_DEFAULT = 10_000
"""``auto_half_open`` when unset (the forwarder's ``VGW_AUTO_HALFOPEN_DEFAULT``)."""
AUTO_SYN_RATE_DEFAULT = 100_000
"""``auto_syn_rate`` when unset (the forwarder's ``VGW_AUTO_SYN_RATE_DEFAULT``)."""

SynProxyMode = Literal["off", "on", "auto"]


def _yaml_switch(v: Any) -> Any:
    """YAML 1.1 reads a bare ``on``/``off`` as true/false: take those as "on"/"off"."""
    if v is True:
        return "on"
    if v is False:
        return "off"
    return v


# The schema says what the validator takes: a YAML bare on/off arrives as a boolean.
_SynProxySetting = Annotated[
    SynProxyMode,
    BeforeValidator(_yaml_switch),
    WithJsonSchema({"anyOf": [{"enum": ["off", "on", "auto"], "type": "string"}, {"type": "boolean"}]}),
]
_Threshold = Annotated[int, Field(ge=1, le=Limits.MAX_RATE)]
_Cap = Annotated[int, Field(ge=0, le=Limits.MAX_RATE)]


class Protection(_Model):
    """Flood protection in each node's forwarder (docs/config.md, "Flood protection").

    Set on a VIP (for all its services) and/or on a service: field by field, a service's value wins
    over its VIP's, and an unset field (absent or null) falls through to the VIP's and then to the
    default (:func:`service_protection`). Rates and counts are per node. ``syn_proxy``, its
    thresholds and ``rst_unknown`` are TCP settings: a VIP's reach only its TCP services, and a UDP
    service may not set them (except ``syn_proxy: off`` and ``rst_unknown: false``)."""

    syn_proxy: _SynProxySetting | None = Field(
        default=None,
        description="off: every SYN creates a half-open connection entry; on: the forwarder answers every SYN "
        "with a SYN cookie and creates state only once the client's ACK returns it; auto: on while the node's "
        "half-open entries exceed auto_half_open or the service's SYN rate exceeds auto_syn_rate. "
        "Default auto (TCP). A bare YAML on/off (read as true/false) is taken as on/off",
    )
    auto_half_open: _Threshold | None = Field(
        default=None,
        description=f"For auto: half-open entries on the node above which the SYN proxy turns on "
        f"(1-{Limits.MAX_RATE}, default {AUTO_HALF_OPEN_DEFAULT})",
    )
    auto_syn_rate: _Threshold | None = Field(
        default=None,
        description=f"For auto: SYNs per second to the service on the node above which the SYN proxy turns on "
        f"(1-{Limits.MAX_RATE}, default {AUTO_SYN_RATE_DEFAULT})",
    )
    conn_rate: _Cap | None = Field(
        default=None,
        description=f"New connections per second the service accepts on the node; the rest are dropped and "
        f"counted (0-{Limits.MAX_RATE}; 0 = unlimited, the default)",
    )
    conn_rate_per_source_24: _Cap | None = Field(
        default=None,
        description=f"New connections per second the service accepts on the node from one client /24 "
        f"(0-{Limits.MAX_RATE}; 0 = unlimited, the default)",
    )
    rst_unknown: bool | None = Field(
        default=None,
        description="Answer TCP segments that belong to no connection (ACK floods, connections lost in a "
        "restart) with a rate-limited RST instead of only dropping them. Default false",
    )


class Service(_Model):
    name: Name = Field(description="Unique in the document; names the service in events and metrics")
    port: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    forwarding: Literal["fullnat", "dr", "tun"] = Field(
        default="fullnat", description="Only fullnat is supported; dr and tun are rejected until the dataplane has them"
    )
    scheduler: Literal["maglev", "wrr", "wlc"] = "maglev"
    maglev_table_size: Annotated[int, Field(ge=7, le=1048573)] | None = Field(
        default=None, description="A prime; default 65537"
    )
    toa: bool | None = Field(default=None, description="Insert the TOA option (client address); default on for TCP")
    timeouts: Timeouts = Timeouts()
    health_check: Name | None = Field(default=None, description="Name of a health check; none = always healthy")
    on_backend_removed: Literal["keep", "reset"] = Field(
        default="keep", description="keep: a removed backend's connections live on until they end; reset: cut"
    )
    protection: Protection | None = Field(
        default=None, description="Flood protection; overrides the VIP's protection field by field"
    )
    expected_connections: Annotated[int, Field(ge=1, le=Limits.EXPECTED_CONNECTIONS_MAX)] | None = Field(
        default=None,
        description="Concurrent connections one node should hold for this service; validation warns when the "
        "node's LIPs x backends (or its connection tables) cannot",
    )
    description: Text = ""
    backends: Annotated[list[Backend], Field(max_length=Limits.BACKENDS_PER_SERVICE)] = []

    @property
    def toa_enabled(self) -> bool:
        return self.protocol == "tcp" if self.toa is None else self.toa


class BgpAttributes(_Model):
    """BGP path attributes for one announce state (added to the VIP's communities)."""

    med: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    local_pref: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    as_path_prepend: Annotated[int, Field(ge=0, le=16)] = 0
    communities: Annotated[list[Community], Field(max_length=Limits.COMMUNITIES)] = []


class VipBgpPolicy(_Model):
    """How a VIP is announced, and what happens when it has too few healthy backends.

    Healthy backends are counted per service (enabled and up; draining counts as healthy for this
    purpose only while it is up, disabled never). The VIP is *below the low watermark* when any of
    its services has fewer healthy backends than ``low_watermark``; it recovers once every service
    has at least ``high_watermark`` (hysteresis). A percentage is of that service's backends that
    are not disabled, rounded up.
    """

    communities: Annotated[list[Community], Field(max_length=Limits.COMMUNITIES)] = []
    normal: BgpAttributes = Field(default=BgpAttributes(), description="Attributes while healthy")
    deprioritised: BgpAttributes = Field(
        default=BgpAttributes(med=1000, as_path_prepend=2),
        description="Attributes while below the low watermark, when on_unhealthy is deprioritise",
    )
    standby: BgpAttributes = Field(
        default=BgpAttributes(med=2000, as_path_prepend=4),
        description="Attributes used by nodes of the standby cluster",
    )
    on_unhealthy: Literal["withdraw", "deprioritise"] = "withdraw"
    low_watermark: Watermark = 1
    high_watermark: Watermark = 1

    def thresholds(self, total: int) -> tuple[int, int]:
        """(low, high) healthy-backend counts for a service with ``total`` usable backends."""
        return watermark_count(self.low_watermark, total), watermark_count(self.high_watermark, total)


MonitorKind = Literal["tcp", "http", "https", "udp"]


class MonitorProbe(_Model):
    """An end-to-end probe of one of the VIP's services, run by the monitor from outside."""

    name: Name | None = Field(default=None, description="Default: <kind>-<port>")
    kind: MonitorKind
    port: Port
    interval: Annotated[Duration, Field(ge=0.1, le=3600)] = 5.0
    timeout: Annotated[Duration, Field(ge=0.01, le=600)] = 2.0
    per_node: bool = Field(default=True, description="Also probe through each serving node separately")
    http: HttpParams | None = None
    payload: PayloadParams | None = None

    @property
    def protocol(self) -> Literal["tcp", "udp"]:
        return "udp" if self.kind == "udp" else "tcp"

    @property
    def probe_name(self) -> str:
        return self.name or f"{self.kind}-{self.port}"


class VipSpec(_Model):
    """A VIP without its services (the store keeps services as separate records)."""

    address: IPAddress
    name: Name | None = None
    cluster: Name = Field(description="The cluster whose nodes serve and announce this VIP")
    standby_cluster: Name | None = Field(default=None, description="Overrides the cluster's standby for this VIP")
    nodes: Annotated[list[Name], Field(min_length=1, max_length=Limits.NODES)] | None = Field(
        default=None, description="Nodes of the cluster that serve and announce this VIP; default all of them"
    )
    enabled: bool = Field(default=True, description="false: programmed but never announced")
    bgp: VipBgpPolicy = VipBgpPolicy()
    monitor: Annotated[list[MonitorProbe], Field(max_length=Limits.MONITOR_PROBES_PER_VIP)] = []
    protection: Protection | None = Field(
        default=None, description="Flood protection for the VIP's services (each service may override it)"
    )


class Vip(VipSpec):
    services: Annotated[list[Service], Field(min_length=1, max_length=Limits.SERVICES_PER_VIP)]


@dataclass(frozen=True, slots=True)
class EffectiveProtection:
    """The flood protection one service runs with (:func:`service_protection`): no unset fields;
    caps of 0 mean unlimited."""

    syn_proxy: SynProxyMode
    auto_half_open: int
    auto_syn_rate: int
    conn_rate: int
    conn_rate_per_source_24: int
    rst_unknown: bool


def service_protection(vip: VipSpec, service: Service) -> EffectiveProtection:
    """The protection ``service`` of ``vip`` runs with: each field from the service's
    :class:`Protection`, else the VIP's, else the default. TCP defaults to ``syn_proxy: auto`` with
    the default thresholds (secure by default), no caps and no RSTs. A UDP service takes only the
    caps; its SYN-proxy settings are off (a VIP's TCP settings do not reach it)."""
    layers = [p for p in (service.protection, vip.protection) if p is not None]

    def pick(name: str) -> Any:
        return next((v for v in (getattr(p, name) for p in layers) if v is not None), None)

    conn_rate = pick("conn_rate") or 0
    per_24 = pick("conn_rate_per_source_24") or 0
    if service.protocol != "tcp":
        return EffectiveProtection("off", AUTO_HALF_OPEN_DEFAULT, AUTO_SYN_RATE_DEFAULT, conn_rate, per_24, False)
    return EffectiveProtection(
        syn_proxy=pick("syn_proxy") or "auto",
        auto_half_open=pick("auto_half_open") or AUTO_HALF_OPEN_DEFAULT,
        auto_syn_rate=pick("auto_syn_rate") or AUTO_SYN_RATE_DEFAULT,
        conn_rate=conn_rate,
        conn_rate_per_source_24=per_24,
        rst_unknown=bool(pick("rst_unknown")),
    )


class ConfigDocument(_Model):
    """A whole VGW configuration."""

    version: Literal[1] = SCHEMA_VERSION
    timeouts: Timeouts = Field(default=Timeouts(), description="Document-wide defaults for connection timeouts")
    clusters: Annotated[list[Cluster], Field(max_length=Limits.CLUSTERS)] = []
    nodes: Annotated[list[Node], Field(max_length=Limits.NODES)] = []
    health_checks: Annotated[list[HealthCheck], Field(max_length=Limits.HEALTH_CHECKS)] = []
    vips: Annotated[list[Vip], Field(max_length=Limits.VIPS)] = []

    # --- lookups (linear; build an index once when calling these in a loop) ---

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)

    def health_check(self, name: str) -> HealthCheck | None:
        return next((c for c in self.health_checks if c.name == name), None)

    def vip(self, address: str | IP) -> Vip | None:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        return next((v for v in self.vips if v.address == ip), None)

    def services(self) -> Iterator[tuple[Vip, Service]]:
        for v in self.vips:
            for s in v.services:
                yield v, s

    def service(self, name: str) -> tuple[Vip, Service] | None:
        return next(((v, s) for v, s in self.services() if s.name == name), None)

    def standby_cluster_of(self, vip: Vip) -> str | None:
        if vip.standby_cluster is not None:
            return vip.standby_cluster
        c = self.cluster(vip.cluster)
        return c.standby if c is not None else None

    def vip_nodes(self, vip: Vip) -> tuple[list[str], list[str]]:
        """(primary node ids, standby node ids) that serve ``vip``. In a loop over VIPs, build a
        :class:`ServingNodes` once instead."""
        return ServingNodes(self)(vip)


class ServingNodes:
    """Which nodes serve a VIP -- ``(primary node ids, standby node ids)``, the nodes whose
    :func:`node_view` holds it -- with the lookups built once, for loops over every VIP."""

    def __init__(self, doc: ConfigDocument) -> None:
        self._clusters: dict[str, Cluster] = {}
        for c in doc.clusters:
            self._clusters.setdefault(c.name, c)  # the first of duplicate names, like doc.cluster()
        self._by_cluster: dict[str, list[str]] = {}
        for n in doc.nodes:
            self._by_cluster.setdefault(n.cluster, []).append(n.id)

    def __call__(self, vip: VipSpec) -> tuple[list[str], list[str]]:
        primary = list(vip.nodes if vip.nodes is not None else self._by_cluster.get(vip.cluster, ()))
        standby_name = vip.standby_cluster
        if standby_name is None:
            cluster = self._clusters.get(vip.cluster)
            standby_name = cluster.standby if cluster is not None else None
        members = self._by_cluster.get(standby_name, ()) if standby_name is not None else ()
        if not members:
            return primary, []
        taken = set(primary)
        return primary, [n for n in members if n not in taken]


# --- per-node view (the forwarder shim programs this) ---------------------------------------------

Role = Literal["primary", "standby"]


@dataclass(frozen=True, slots=True)
class NodeService:
    vip: Vip
    service: Service
    role: Role
    health_check: HealthCheck | None

    def backend_health_key(self, backend: Backend) -> str | None:
        """KV key of the backend's health for this service's check; None when unchecked."""
        if self.health_check is None:
            return None
        return health_key(backend.address, self.health_check.port or backend.port, self.health_check.name)


@dataclass(frozen=True, slots=True)
class NodeView:
    node: Node
    cluster: Cluster | None
    vips: list[tuple[Vip, Role]] = field(default_factory=list)
    services: list[NodeService] = field(default_factory=list)
    lips: list[IP] = field(default_factory=list)
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def isolated(self) -> bool:
        return self.node.state == "isolated"

    @property
    def draining(self) -> NodeDrain | None:
        """The node's drain while its state is draining."""
        return self.node.drain if self.node.state == "draining" else None


def node_view(doc: ConfigDocument, node_id: str) -> NodeView | None:
    """What ``node_id`` serves: VIPs where it is a primary or standby node, their services with all
    backends (filter by state and health yourself), its LIPs and the document-wide timeouts. None
    when the node is not in the document."""
    node = doc.node(node_id)
    if node is None:
        return None
    checks = {c.name: c for c in doc.health_checks}
    clusters = {c.name: c for c in doc.clusters}
    nodes_by_cluster: dict[str, list[str]] = {}
    for n in doc.nodes:
        nodes_by_cluster.setdefault(n.cluster, []).append(n.id)
    vips: list[tuple[Vip, Role]] = []
    services: list[NodeService] = []
    for vip in doc.vips:
        primary = vip.nodes if vip.nodes is not None else nodes_by_cluster.get(vip.cluster, [])
        role: Role | None = None
        if node_id in primary:
            role = "primary"
        else:
            standby = vip.standby_cluster
            if standby is None and vip.cluster in clusters:
                standby = clusters[vip.cluster].standby
            if standby is not None and node.cluster == standby:
                role = "standby"
        if role is None:
            continue
        vips.append((vip, role))
        for svc in vip.services:
            check = checks.get(svc.health_check) if svc.health_check else None
            services.append(NodeService(vip=vip, service=svc, role=role, health_check=check))
    return NodeView(
        node=node,
        cluster=clusters.get(node.cluster),
        vips=vips,
        services=services,
        lips=node.lips(),
        timeouts=doc.timeouts,
    )


# --- what a node's forwarder takes (the shim programs it, the memory budget counts it) -------------


def forwarder_lips(lips: list[IP]) -> tuple[list[ipaddress.IPv4Address], int]:
    """The LIPs a node's forwarder uses -- its IPv4 LIPs in order, at most
    :attr:`Limits.LIPS_PER_NODE` -- and how many IPv4 LIPs beyond that were left out."""
    v4 = [a for a in lips if isinstance(a, ipaddress.IPv4Address)]
    return v4[: Limits.LIPS_PER_NODE], max(0, len(v4) - Limits.LIPS_PER_NODE)


def forwarder_unsupported(vip: VipSpec, service: Service) -> str | None:
    """Why no forwarder can take ``service`` of ``vip`` (an IPv6 VIP, a forwarding mode other
    than fullnat), or None. A node without an IPv4 LIP takes no service at all."""
    if vip.address.version != 4:
        return f"IPv6 VIP {vip.address} (the forwarder is IPv4-only for now)"
    if service.forwarding != "fullnat":
        return f"forwarding {service.forwarding} is not supported"
    return None


def forwarder_backends(service: Service) -> list[Backend]:
    """The backends of ``service`` the forwarder gets (the IPv4 ones, in every state)."""
    return [b for b in service.backends if isinstance(b.address, ipaddress.IPv4Address)]


# --- health probe identity (healthcheck dedups on this) -------------------------------------------


def health_key(address: str | IP, port: int, check: str) -> str:
    """The stable key of one probe stream: ``<address>_<port>.<check>``, e.g.
    ``198-51-100-5_8080.web-http``. KV-safe (no ``:``) and subject-safe per token."""
    return f"{endpoint_token(address, port)}.{check}"


@dataclass(frozen=True, slots=True)
class HealthUser:
    """A (service, backend) that relies on a probe stream."""

    service: str
    vip: IP
    port: int
    protocol: Literal["tcp", "udp"]
    backend: Backend


@dataclass(slots=True)
class HealthTarget:
    """One probe stream: a check against one address and port, shared by every user."""

    key: str
    address: IP
    port: int
    check: HealthCheck
    users: list[HealthUser] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Whether any user has the backend enabled or draining (disabled-only targets need no probe)."""
        return any(u.backend.state != "disabled" for u in self.users)


def health_targets(doc: ConfigDocument) -> dict[str, HealthTarget]:
    """Every probe stream the document needs, keyed by :func:`health_key`."""
    checks = {c.name: c for c in doc.health_checks}
    out: dict[str, HealthTarget] = {}
    for vip, svc in doc.services():
        if svc.health_check is None or svc.health_check not in checks:
            continue
        check = checks[svc.health_check]
        for b in svc.backends:
            port = check.port or b.port
            key = health_key(b.address, port, check.name)
            target = out.get(key)
            if target is None:
                target = out[key] = HealthTarget(key=key, address=b.address, port=port, check=check)
            target.users.append(
                HealthUser(service=svc.name, vip=vip.address, port=svc.port, protocol=svc.protocol, backend=b)
            )
    return out
