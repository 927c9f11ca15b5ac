"""The permission matrix against a real nats-server configured by ``vgwctl security init``.

Every identity connects with exactly what ``VgwSettings().nats_options()`` builds from its
generated vgw.env (CA, client certificate, nkey seed, inbox prefix), and does its job through the
real code paths (KvStore, ConfigStore/ConfigReader, Bus). Each forbidden action is refused and
leaves the state unchanged, checked afterwards by an identity allowed to read it.

NATS refuses a publish silently for the publisher (a permissions error on the error callback, a
JetStream request that never gets its ack), so refusals are bounded by short timeouts and proven
by the state afterwards.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel

from services.healthcheck.membership import Member
from services.monitor.store import MonitorStore
from tests.security.secure_nats import SecureNats
from tests.support.nats_server import free_port
from vgw.bgp import BGP_BUCKET, NodeBgp, open_bgp
from vgw.bus import EVENT_STREAM, Bus, Received
from vgw.config.store import BUCKET as CONFIG_BUCKET
from vgw.config.store import ConfigReader, ConfigStore
from vgw.config.validate import load_document
from vgw.events import (
    BackendDown,
    BackendState,
    CheckKind,
    ClusterWithdrawRequest,
    DataplaneStatus,
    Endpoint,
    Event,
    ForwarderState,
    MonitorVipStatus,
    NodeWithdrawRequest,
    ProbeResult,
    RequestAction,
    RouteReason,
    RouteState,
    VipAnnounce,
    VipHealth,
)
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.lease import MONITOR_LEASE_BUCKET, Lease, LeaseRecord
from vgw.monitoring import MONITOR_BUCKET, OBS_BUCKET, ActiveRequest
from vgw.routes import ROUTES_BUCKET, RouteEntry, route_key
from vgw.security import init_dir
from vgw.security.identities import HC_MEMBERS_BUCKET
from vgw.store import KvStore
from vgw.traffic import TRAFFIC_BUCKET, NodeTraffic, open_traffic
from vgw.withdraw_requests import (
    REQUESTS_BUCKET,
    WITHDRAWALS_BUCKET,
    RequestInForce,
    Withdrawal,
    entry_key,
    node_keys,
    read_in_force,
)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "config-example.yaml"
VIP = ip_address("203.0.113.10")
REFUSED_S = 1.0  # how long a refused request is given before we look at the state


class Probe(BaseModel):
    """A value for buckets whose real model does not matter to a permission check."""

    v: int = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    secdir = tmp_path_factory.mktemp("sec")
    port = free_port()
    init_dir(
        secdir,
        ["node-a", "node-b"],
        nats_url=f"tls://127.0.0.1:{port}",
        nats_listen_host="127.0.0.1",
        store_dir=str(secdir / "data"),
    )
    srv = SecureNats(secdir, port)
    try:
        yield srv.start()
    finally:
        srv.stop()


class Conn:
    """Buses opened for a test, closed at its end."""

    def __init__(self, server: SecureNats) -> None:
        self.server = server
        self.buses: list[Bus] = []

    async def __call__(self, identity: str) -> Bus:
        bus = Bus(self.server.settings(identity).nats_options(), source=f"/vgw/tests/{identity}")
        await bus.connect()
        self.buses.append(bus)
        return bus

    async def close(self) -> None:
        for b in self.buses:
            await b.close()


@pytest.fixture
async def connect(server: SecureNats) -> AsyncIterator[Conn]:
    c = Conn(server)
    try:
        yield c
    finally:
        await c.close()


async def raw(server: SecureNats, identity: str, errors: list[str]) -> NatsClient:
    """A plain nats-py client with the identity's options, recording server errors."""

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    opts = server.settings(identity).nats_options()
    return await nats.connect(**opts, error_cb=on_error, allow_reconnect=False)


async def refused(coro: Any) -> None:
    """The operation must not succeed: it raises or never gets its answer."""
    try:
        await asyncio.wait_for(coro, REFUSED_S)
    except Exception:
        return
    raise AssertionError("the operation succeeded but must be refused")


def now() -> datetime:
    return datetime.now(UTC)


def health_entry(state: BackendState = BackendState.DOWN) -> HealthEntry:
    return HealthEntry(
        address=ip_address("198.51.100.7"),
        port=80,
        check="http",
        kind=CheckKind.HTTP,
        state=state,
        reason=ProbeResult.REFUSED,
        since=now(),
        checker="hc-1",
    )


def route(node: str, state: RouteState = RouteState.ANNOUNCED) -> RouteEntry:
    return RouteEntry(node=node, vip=VIP, state=state, reason=RouteReason.GATES_OK, since=now(), decided_at=now())


def node_request(node: str, kind: str) -> NodeWithdrawRequest:
    return NodeWithdrawRequest(
        request_id=uuid.uuid4().hex,
        action=RequestAction.WITHDRAW,
        vip=VIP,
        requester=f"{kind}/test",
        reason="test",
        node=node,
    )


def cluster_request(kind: str) -> ClusterWithdrawRequest:
    return ClusterWithdrawRequest(
        request_id=uuid.uuid4().hex,
        action=RequestAction.WITHDRAW,
        vip=VIP,
        requester=f"{kind}/test",
        reason="test",
        cluster="lab",
    )


async def stored(reader: Bus, subject: str) -> int:
    """How many events the stream holds on ``subject`` (read by an identity allowed to)."""
    info = await reader.js.stream_info(EVENT_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def published(bus: Bus, event: Event) -> bool:
    """Publish through the real path; True if the stream acknowledged it (nothing left queued)."""
    await bus.publish(event, timeout=REFUSED_S)
    return bus.outbox_size == 0


async def setup_buckets(connect: Conn) -> None:
    """Each bucket created by its writer, as the services do at start."""
    cfg = await connect("config")
    await cfg.ensure_event_stream()
    store = await ConfigStore(cfg).open()
    await store.commit(load_document(EXAMPLE.read_bytes()), actor="test", reason="seed")
    hc = await connect("healthcheck")
    await KvStore.open(hc, HEALTH_BUCKET, HealthEntry)
    await KvStore.open(hc, HC_MEMBERS_BUCKET, Member, ttl_s=3.0)
    await MonitorStore.open(await connect("monitor"))
    await KvStore.open(await connect("routectl-node-a"), ROUTES_BUCKET, RouteEntry, history=5)


# --- every identity does its job ----------------------------------------------------------------


async def test_config_commits_and_announces(connect: Conn) -> None:
    await setup_buckets(connect)
    cfg = await connect("config")
    store = await ConfigStore(cfg).open()
    before = (await store.current()).revision
    doc = load_document(EXAMPLE.read_bytes())
    result = await store.commit(doc.model_copy(update={"vips": doc.vips[:1]}), actor="test", reason="job")
    assert result.committed and result.revision == before + 1
    assert cfg.outbox_size == 0  # config.changed stored
    sub = await connect("subscriber")
    assert await stored(sub, "vgw.v1.config.changed") >= 1


async def test_healthcheck_reads_config_writes_health_publishes(connect: Conn) -> None:
    await setup_buckets(connect)
    hc = await connect("healthcheck")
    reader = await ConfigReader(hc).open()
    async with asyncio.timeout(5):
        async for cr in reader.watch():  # the ordered-consumer watch the services follow
            assert cr.revision >= 1 and cr.document.nodes
            break
    health = await KvStore.open(hc, HEALTH_BUCKET, HealthEntry)
    key = health_key("198.51.100.7", 80, "http")
    await health.put(key, health_entry())
    members = await KvStore.open(hc, HC_MEMBERS_BUCKET, Member, ttl_s=3.0)
    await members.put("hc-1", Member(instance="hc-1", started_at=now(), heartbeat_at=now()))
    assert (await members.snapshot()).keys() >= {"hc-1"}
    down = BackendDown(
        service="web-http",
        vip=VIP,
        port=80,
        protocol="tcp",
        backend=Endpoint(address=ip_address("198.51.100.7"), port=80),
        check="http",
        check_kind=CheckKind.HTTP,
        previous_state=BackendState.UP,
        reason=ProbeResult.REFUSED,
        consecutive=3,
        checker="hc-1",
    )
    assert await published(hc, down)


async def test_routectl_writes_own_routes_reads_all_and_announces(connect: Conn) -> None:
    await setup_buckets(connect)
    a = await connect("routectl-node-a")
    routes = await KvStore.open(a, ROUTES_BUCKET, RouteEntry, history=5)
    await routes.put(route_key("node-a", VIP), route("node-a"))
    b = await connect("routectl-node-b")
    routes_b = await KvStore.open(b, ROUTES_BUCKET, RouteEntry, history=5)
    await routes_b.put(route_key("node-b", VIP), route("node-b"))
    # The last-announcer guard reads every node's routes; health and config are inputs.
    assert {route_key("node-a", VIP), route_key("node-b", VIP)} <= (await routes_b.snapshot()).keys()
    await (await KvStore.attach(a, HEALTH_BUCKET, HealthEntry)).snapshot()
    await ConfigReader(a).open()
    announce = VipAnnounce(node="node-a", vip=VIP, state=RouteState.ANNOUNCED, reason=RouteReason.GATES_OK)
    assert await published(a, announce)
    # Counting stored requests at start, and replaying them (stream consumers from the epoch).
    await a.js.stream_info(EVENT_STREAM, subjects_filter=f"{NodeWithdrawRequest.subject_base()}.>")
    got: list[Received] = []

    async def on_request(r: Received) -> None:
        got.append(r)

    await a.subscribe(
        on_request, subject=f"{NodeWithdrawRequest.subject_base()}.node-a.>", since=datetime(1970, 1, 1, tzinfo=UTC)
    )
    op = await connect("operator")
    assert await published(op, node_request("node-a", "operator"))
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.02)
    assert got[-1].subject.endswith(".operator")


async def test_shim_reads_config_and_health_publishes_own_status(connect: Conn) -> None:
    await setup_buckets(connect)
    shim = await connect("shim-node-a")
    await (await ConfigReader(shim).open()).current()
    await (await KvStore.attach(shim, HEALTH_BUCKET, HealthEntry)).snapshot()
    status = DataplaneStatus(node="node-a", seq=1, interval_s=1.0, forwarder=ForwarderState.UP)
    assert await published(shim, status)


async def test_monitor_writes_its_buckets_and_asks_as_monitor(connect: Conn) -> None:
    await setup_buckets(connect)
    mon = await connect("monitor")
    await MonitorStore.open(mon)
    obs = KvStore(mon, OBS_BUCKET, Probe)
    await obs.put("obs.test", Probe(v=2))
    await KvStore(mon, MONITOR_BUCKET, Probe).put("leader", Probe())
    got = await obs.get("obs.test")
    assert got is not None and got.value.v == 2
    await (await ConfigReader(mon).open()).current()
    status = MonitorVipStatus(vip=VIP, port=80, protocol="tcp", status=VipHealth.DOWN, monitor="vp-1")
    assert await published(mon, status)
    assert await published(mon, cluster_request("monitor"))
    assert await published(mon, node_request("node-b", "monitor"))


async def test_operator_asks_as_operator_and_reads_routes(connect: Conn) -> None:
    await setup_buckets(connect)
    op = await connect("operator")
    assert await published(op, cluster_request("operator"))
    routes = await KvStore.open(op, ROUTES_BUCKET, RouteEntry, create=False)
    await routes.snapshot()
    await (await KvStore.open(op, MONITOR_BUCKET, Probe, create=False)).snapshot("view.>")
    await (await KvStore.open(op, HEALTH_BUCKET, HealthEntry, create=False)).snapshot()
    adm = await connect("admin")
    assert await published(adm, node_request("node-a", "operator"))


async def test_subscriber_receives_events(connect: Conn) -> None:
    await setup_buckets(connect)
    sub = await connect("subscriber")
    got: list[Received] = []

    async def handler(r: Received) -> None:
        got.append(r)

    await sub.subscribe(handler, types=[DataplaneStatus])
    shim = await connect("shim-node-b")
    assert await published(shim, DataplaneStatus(node="node-b", seq=7, interval_s=1.0, forwarder=ForwarderState.UP))
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.02)
    assert isinstance(got[0].event, DataplaneStatus) and got[0].event.seq == 7


# --- and is refused everything else, with the state unchanged -----------------------------------


def _client_ctx(server: SecureNats, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.secdir / "ca" / "ca.crt"))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _connect_fails(**opts: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - TLS, auth or no-servers errors alike
        nc = await nats.connect(**opts, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
        await nc.close()


async def test_connections_without_credentials_are_refused(server: SecureNats, tmp_path: Path) -> None:
    from vgw.security import pki

    # No TLS at all, TLS without a client certificate, a valid certificate without an nkey.
    await _connect_fails(servers=[f"nats://127.0.0.1:{server.port}"])
    await _connect_fails(servers=[server.url], tls=_client_ctx(server))
    ident = server.secdir / "identities" / "operator"
    await _connect_fails(servers=[server.url], tls=_client_ctx(server, ident / "tls.crt", ident / "tls.key"))
    # A client certificate from another CA, with a valid nkey.
    other = pki.new_ca("Other CA")
    leaf = pki.new_client(other, "operator", "operator")
    (tmp_path / "c.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "c.key").write_bytes(leaf.key_pem)
    await _connect_fails(
        servers=[server.url],
        tls=_client_ctx(server, tmp_path / "c.crt", tmp_path / "c.key"),
        nkeys_seed=str(ident / "nkey.seed"),
    )
    # A valid nkey of one identity with another identity's certificate still works for NATS (the
    # certificate is the transport credential, the nkey the NATS identity) -- not asserted here.


async def test_healthcheck_cannot_write_config(connect: Conn) -> None:
    await setup_buckets(connect)
    cfg = await connect("config")
    reader = await ConfigReader(cfg).open()
    head_before = await reader.head()
    hc = await connect("healthcheck")
    # Binding needs only reads (which it has); committing writes chunks and the head.
    store = await ConfigStore(hc).open()
    doc = load_document(EXAMPLE.read_bytes())
    await refused(store.commit(doc.model_copy(update={"vips": []}), actor="healthcheck", reason="forged"))
    forged = KvStore(hc, CONFIG_BUCKET, Probe)
    await refused(forged.put("head", Probe()))
    await refused(forged.put("chunk.forged", Probe()))
    assert await reader.head() == head_before
    assert await KvStore(cfg, CONFIG_BUCKET, Probe).get("chunk.forged") is None


async def test_shim_cannot_write_routes(connect: Conn) -> None:
    await setup_buckets(connect)
    a = await connect("routectl-node-a")
    b = await connect("routectl-node-b")
    ra = await KvStore.open(a, ROUTES_BUCKET, RouteEntry, history=5)
    rb = await KvStore.open(b, ROUTES_BUCKET, RouteEntry, history=5)
    await ra.put(route_key("node-a", VIP), route("node-a"))
    await rb.put(route_key("node-b", VIP), route("node-b"))
    before = await ra.snapshot()
    shim = await connect("shim-node-a")
    forged = KvStore(shim, ROUTES_BUCKET, RouteEntry)
    await refused(forged.put(route_key("node-a", VIP), route("node-a", RouteState.WITHDRAWN)))
    await refused(forged.put(route_key("node-b", VIP), route("node-b", RouteState.WITHDRAWN)))
    await refused(KvStore.open(shim, ROUTES_BUCKET, RouteEntry, create=False))  # not even read
    assert await ra.snapshot() == before


async def test_routectl_cannot_write_another_nodes_routes(connect: Conn) -> None:
    await setup_buckets(connect)
    b = await connect("routectl-node-b")
    rb = await KvStore.open(b, ROUTES_BUCKET, RouteEntry, history=5)
    await rb.put(route_key("node-b", VIP), route("node-b"))
    before = await rb.get(route_key("node-b", VIP))
    a = await connect("routectl-node-a")
    ra = await KvStore.open(a, ROUTES_BUCKET, RouteEntry, history=5)
    await refused(ra.put(route_key("node-b", VIP), route("node-b", RouteState.WITHDRAWN)))
    await refused(ra.delete(route_key("node-b", VIP)))
    assert await rb.get(route_key("node-b", VIP)) == before
    # Nor announce for node-b.
    assert not await published(
        a, VipAnnounce(node="node-b", vip=VIP, state=RouteState.ANNOUNCED, reason=RouteReason.GATES_OK)
    )


async def test_routectl_hears_only_its_own_forwarders_heartbeat_live(server: SecureNats, connect: Conn) -> None:
    """Route control follows its forwarder's heartbeat over core NATS (it must not depend on the
    event stream having a leader), and only its own node's."""
    await setup_buckets(connect)
    rc = await connect("routectl-node-a")
    got: list[int] = []

    async def on_status(r: Received) -> None:
        assert isinstance(r.event, DataplaneStatus)
        got.append(r.event.seq)

    await rc.subscribe(on_status, subject=f"{DataplaneStatus.subject_base()}.node-a", live=True)
    await rc.flush()
    shim = await connect("shim-node-a")
    await shim.publish(DataplaneStatus(node="node-a", seq=3, interval_s=1.0, forwarder=ForwarderState.UP), live=True)
    async with asyncio.timeout(5):
        while got != [3]:
            await asyncio.sleep(0.02)
    errors: list[str] = []
    spy = await raw(server, "routectl-node-a", errors)
    try:
        await spy.subscribe(f"{DataplaneStatus.subject_base()}.node-b")
        await spy.flush()
        async with asyncio.timeout(5):
            while not any("permissions violation for subscription" in e.lower() for e in errors):
                await asyncio.sleep(0.02)
    finally:
        await spy.close()


async def test_shim_cannot_publish_another_nodes_status(connect: Conn) -> None:
    await setup_buckets(connect)
    sub = await connect("subscriber")
    subject = f"{DataplaneStatus.subject_base()}.node-b"
    before = await stored(sub, subject)
    shim = await connect("shim-node-a")
    fake = DataplaneStatus(node="node-b", seq=1, interval_s=1.0, forwarder=ForwarderState.DOWN)
    assert not await published(shim, fake)
    assert await stored(sub, subject) == before


async def test_subscriber_can_only_read_events(connect: Conn) -> None:
    await setup_buckets(connect)
    sub = await connect("subscriber")
    subject = f"{ClusterWithdrawRequest.subject_base()}.>"
    before = await stored(sub, subject)
    assert not await published(sub, cluster_request("operator"))
    assert not await published(sub, node_request("node-a", "operator"))
    assert await stored(sub, subject) == before
    await refused(KvStore.open(sub, CONFIG_BUCKET, Probe, create=False))
    await refused(KvStore.open(sub, ROUTES_BUCKET, Probe, create=False))
    await refused(sub.js.delete_stream(EVENT_STREAM))
    assert await stored(sub, subject) == before


async def test_monitor_cannot_ask_as_operator(connect: Conn) -> None:
    await setup_buckets(connect)
    sub = await connect("subscriber")
    subject = f"{ClusterWithdrawRequest.subject_base()}.*.*.operator"
    before = await stored(sub, subject)
    mon = await connect("monitor")
    assert not await published(mon, cluster_request("operator"))
    assert await stored(sub, subject) == before
    # Nor may the operator ask as the monitor.
    mon_subject = f"{NodeWithdrawRequest.subject_base()}.*.*.monitor"
    before = await stored(sub, mon_subject)
    assert not await published(await connect("operator"), node_request("node-a", "monitor"))
    assert await stored(sub, mon_subject) == before


async def test_nobody_reads_another_identitys_inbox(server: SecureNats, connect: Conn) -> None:
    await setup_buckets(connect)
    errors: list[str] = []
    thief = await raw(server, "operator", errors)
    stolen: list[str] = []

    async def on_msg(msg: Any) -> None:
        stolen.append(msg.subject)

    try:
        for pattern in ("_INBOX_config.>", "_INBOX.>", ">", "*.>"):
            await thief.subscribe(pattern, cb=on_msg)
        await thief.flush()
        # The config identity does request/reply work (JetStream API answers land in its inbox).
        cfg = await connect("config")
        await (await ConfigReader(cfg).open()).current()
        await asyncio.sleep(0.3)
        assert stolen == []
        assert any("permissions violation for subscription" in e.lower() for e in errors), errors
        # Nor publish into one (forging a reply).
        await thief.publish("_INBOX_config.x.y", b"forged")
        await thief.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation for publish" in e.lower() for e in errors), errors
    finally:
        await thief.close()


# --- the live views' buckets (vgwctl top, vgwctl bgp, the monitor's announcer count) ---------------


def traffic(node: str) -> NodeTraffic:
    return NodeTraffic(node=node, at=now(), uptime_ms=1)


def sessions(node: str) -> NodeBgp:
    return NodeBgp(node=node, at=now(), speaker_up=True)


async def test_shim_writes_only_its_own_traffic_and_operators_read_it(connect: Conn) -> None:
    await setup_buckets(connect)
    a = await open_traffic(await connect("shim-node-a"))  # the shim creates the bucket
    await a.put("node-a", traffic("node-a"))
    b = await open_traffic(await connect("shim-node-b"))
    await b.put("node-b", traffic("node-b"))
    await refused(a.put("node-b", traffic("node-b")))
    await refused(KvStore(await connect("routectl-node-a"), TRAFFIC_BUCKET, NodeTraffic).put("node-a", traffic("x")))
    for reader in ("operator", "admin"):
        seen = await (await open_traffic(await connect(reader), create=False)).snapshot()
        assert {k: v.node for k, v in seen.items()}.items() >= {"node-a": "node-a", "node-b": "node-b"}.items()
    await refused(KvStore(await connect("operator"), TRAFFIC_BUCKET, NodeTraffic).put("node-a", traffic("x")))
    await refused(open_traffic(await connect("subscriber"), create=False))


async def test_routectl_writes_only_its_own_sessions_and_operators_read_them(connect: Conn) -> None:
    await setup_buckets(connect)
    a = await open_bgp(await connect("routectl-node-a"))
    await a.put("node-a", sessions("node-a"))
    await refused(a.put("node-b", sessions("node-b")))
    await refused(KvStore(await connect("shim-node-a"), BGP_BUCKET, NodeBgp).put("node-a", sessions("x")))
    seen = await (await open_bgp(await connect("operator"), create=False)).snapshot()
    assert seen["node-a"].node == "node-a" and "node-b" not in seen
    await refused(KvStore(await connect("operator"), BGP_BUCKET, NodeBgp).put("node-a", sessions("x")))


async def test_monitor_reads_every_nodes_routes(connect: Conn) -> None:
    await setup_buckets(connect)
    routes = await KvStore.open(await connect("routectl-node-a"), ROUTES_BUCKET, RouteEntry, history=5)
    await routes.put(route_key("node-a", VIP), route("node-a"))
    mon = await KvStore.open(await connect("monitor"), ROUTES_BUCKET, RouteEntry, create=False)
    assert route_key("node-a", VIP) in await mon.snapshot()  # the module's server keeps other tests' too
    await refused(mon.put(route_key("node-a", VIP), route("node-a", RouteState.WITHDRAWN)))


# --- the monitor's lease, requests in force and withdrawals (vgw/lease.py, vgw/withdraw_requests.py) ---


async def test_monitor_owns_its_lease_and_requests_in_force_that_routectl_and_subscribers_read(
    connect: Conn,
) -> None:
    await setup_buckets(connect)
    mon = await connect("monitor")
    lease = await Lease(mon, MONITOR_LEASE_BUCKET, "vp-1", lease_s=5.0).open()
    assert await lease.step() and lease.token is not None
    held = await lease.current()
    assert held is not None and held.holder == "vp-1"
    store = await MonitorStore.open(mon)
    at = now()
    req = ActiveRequest(
        kind="node", target="node-a", vip=VIP, request_id=uuid.uuid4().hex, reason="test", issued_at=at,
        expires_at=at + timedelta(seconds=30), refreshed_at=at,
    )  # fmt: skip
    await store.put_request(req, "monitor/vp-1", lease.token)
    await store.record_withdrawal(req.request_id, entry_key("node", "node-a", VIP), lease.token)
    key = entry_key("node", "node-a", VIP)
    for reader in ("routectl-node-a", "routectl-node-b", "subscriber", "operator"):
        got = await read_in_force(await connect(reader), node_keys("node-a"))
        assert got is not None and got[key].request_id == req.request_id, reader
    forged = RequestInForce(
        kind="node", target="node-a", vip=VIP, request_id="forged", requester="monitor/forged", issued_at=at,
        expires_at=at + timedelta(seconds=30), refreshed_at=at,
    )  # fmt: skip
    for other in ("routectl-node-a", "subscriber", "operator"):
        bus = await connect(other)
        await refused(KvStore(bus, REQUESTS_BUCKET, RequestInForce).put(key, forged))
        stolen = LeaseRecord(holder="x", renewed_at=at)
        await refused(KvStore(bus, MONITOR_LEASE_BUCKET, LeaseRecord).put("holder", stolen))
        uncounted = Withdrawal(request_id="f", key=key)
        await refused(KvStore(bus, WITHDRAWALS_BUCKET, Withdrawal).put("w.forged", uncounted))
    # only the monitor reads its lease and the rate limit's withdrawals
    await refused(KvStore.open(await connect("routectl-node-a"), MONITOR_LEASE_BUCKET, LeaseRecord, create=False))
    await refused(KvStore.open(await connect("subscriber"), WITHDRAWALS_BUCKET, Withdrawal, create=False))
    after = await read_in_force(mon, node_keys("node-a"))
    assert after is not None and after[key].request_id == req.request_id and after[key].requester == "monitor/vp-1"
    current = await lease.current()  # the forged puts did not land (it may have expired by now: 5 s)
    assert current is None or current.holder == "vp-1"
    await lease.release()
