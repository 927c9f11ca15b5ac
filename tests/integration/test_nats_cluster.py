"""The replicated control plane on a real 3-server JetStream cluster (issue 17, item 3).

One server -- the leader of the config bucket's stream and of the event stream -- is killed with
SIGKILL while configs are committed and events published. Nothing the writer was told is committed
may be lost, no acknowledged event may be lost or stored twice, and writers, publishers and
followers carry on once the cluster has elected new leaders. Also: a bucket with fewer replicas
than VGW_JS_REPLICAS wants is reported (log and metrics) and left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.config.conftest import ConfigService
from tests.config.gen import generate
from tests.support.nats_server import NatsCluster
from vgw.bus import EVENT_STREAM, Bus, Received
from vgw.config.client import ConfigClient
from vgw.config.model import ConfigDocument
from vgw.config.store import BUCKET, ConfigReader, ConfigStore
from vgw.events import ConfigChanged, DataplaneStatus, ForwarderState, decode
from vgw.store import KvStore

CONFIG_STREAM = f"KV_{BUCKET}"
DEADLINE_S = 120.0  # generous: only "it recovers", never "how fast", is asserted


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def buses(cluster: NatsCluster) -> AsyncIterator[list[Bus]]:
    """Buses made by the test (connected by it), closed at the end whatever happened."""
    made: list[Bus] = []
    try:
        yield made
    finally:
        for b in made:
            await b.close()


async def connect(buses: list[Bus], urls: list[str], name: str, **kw: Any) -> Bus:
    # The servers in the given order (the first is where the connection goes), and a fast reconnect.
    opts = {"servers": urls, "reconnect_time_wait": 0.2, "dont_randomize": True, "connect_timeout": 2}
    b = Bus(opts, source=f"/vgw/tests/{name}", **kw)
    await b.connect()
    buses.append(b)
    return b


def document(weight: int) -> ConfigDocument:
    raw = generate(4, 2)
    for vip in raw["vips"]:
        for s in vip["services"]:
            for b in s["backends"]:
                b["weight"] = weight
    return ConfigDocument.model_validate(raw)


def status_event(i: int) -> DataplaneStatus:
    return DataplaneStatus(node="node-a", seq=i, interval_s=1.0, forwarder=ForwarderState.UP, generation=i)


async def leader(bus: Bus, stream: str) -> str:
    info = await bus.js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader: {info.cluster}"
    return str(info.cluster.leader)


async def move_leader(bus: Bus, stream: str, to: str) -> None:
    """Step the stream's leader down until ``to`` leads it (each step-down elects another peer)."""
    deadline = time.monotonic() + 60
    while (current := await leader(bus, stream)) != to:
        assert time.monotonic() < deadline, f"{stream} stayed led by {current}, not {to}"
        try:
            await bus.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        except Exception as exc:  # an election in progress: ask again
            logging.getLogger(__name__).info("step-down of %s: %s", stream, exc)
        await wait_for(lambda: _has_leader(bus, stream), "a new leader of " + stream)


async def _has_leader(bus: Bus, stream: str) -> bool:
    info = await bus.js.stream_info(stream)
    return info.cluster is not None and bool(info.cluster.leader)


async def wait_for(check: Any, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await check():
                return
        except Exception as exc:  # the cluster may be electing: poll again
            logging.getLogger(__name__).debug("waiting for %s: %s", what, exc)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def stream_event_ids(bus: Bus) -> list[str]:
    """The ce-id of every message in the event stream, in stream order (read by sequence)."""
    info = await bus.js.stream_info(EVENT_STREAM)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENT_STREAM, seq)
        ids.append((msg.headers or {})["ce-id"])
    return ids


async def test_leader_killed_while_applying_and_publishing_loses_nothing(
    cluster: NatsCluster, buses: list[Bus]
) -> None:
    setup = await connect(buses, cluster.urls, "setup")
    assert setup.js_replicas == 3  # the default in a cluster
    await setup.ensure_event_stream()
    await ConfigStore(setup).open()
    victim_name = await leader(setup, CONFIG_STREAM)
    await move_leader(setup, EVENT_STREAM, victim_name)
    victim = cluster.node(victim_name)
    survivors = [n.url for n in cluster.nodes if n is not victim]

    # The writer and the publisher are connected to the server that will die; the follower to another.
    writer_bus = await connect(buses, [victim.url, *survivors], "writer")
    publisher = await connect(buses, [victim.url, *survivors], "publisher")
    follower_bus = await connect(buses, survivors, "follower")
    store = await ConfigStore(writer_bus, retention=1000).open()
    reader = await ConfigReader(follower_bus, recheck=False).open()
    seen_revisions: list[int] = []
    received: list[str] = []

    async def follow() -> None:
        async for rev in reader.watch():
            seen_revisions.append(rev.revision)

    async def on_event(r: Received) -> None:
        received.append(r.meta.id)

    await follower_bus.subscribe(on_event, types=[DataplaneStatus, ConfigChanged])
    follower = asyncio.create_task(follow())

    committed: dict[int, int] = {}  # revision -> weight of the document committed
    failed_commits: list[str] = []
    published: list[str] = []
    killed_at: dict[str, int] = {}

    async def apply_loop() -> None:
        weight = 1
        while len(committed) - killed_at.get("commits", 10**9) < 5:
            weight = weight % 60000 + 1
            try:
                r = await store.commit(document(weight), actor="test", reason=f"weight {weight}")
            except Exception as exc:  # not told committed: allowed, but counted and shown
                failed_commits.append(repr(exc))
                continue
            assert r.committed
            committed[r.revision] = weight

    async def publish_loop() -> None:
        i = 0
        while len(published) - killed_at.get("events", 10**9) < 20:
            i += 1
            published.append((await publisher.publish(status_event(i))).id)
            await asyncio.sleep(0)  # let the writer share the loop

    async def kill_when_busy() -> None:
        await wait_for(lambda: _at_least(len(committed) >= 5 and len(published) >= 20), "traffic before the kill")
        killed_at.update(commits=len(committed), events=len(published))
        victim.stop(kill=True)

    await asyncio.wait_for(asyncio.gather(apply_loop(), publish_loop(), kill_when_busy()), DEADLINE_S)
    assert await publisher.wait_published(timeout=DEADLINE_S), f"{publisher.outbox_size} events never stored"
    assert await writer_bus.wait_published(timeout=DEADLINE_S), "config.changed events never stored"
    assert await leader(writer_bus, CONFIG_STREAM) != victim_name

    # The writer rode through the election: a commit in flight was retried, not failed.
    assert failed_commits == [], failed_commits
    # No committed revision lost: each one the writer was told of is readable, whole, in order.
    revisions = list(committed)
    assert revisions == sorted(revisions) and revisions == list(range(revisions[0], revisions[-1] + 1)), (
        revisions,
        failed_commits,
    )
    for rev, weight in committed.items():
        got = await store.revision(rev)
        assert got.document == document(weight), f"revision {rev} does not hold what was committed"
    head, _ = await store.head()
    assert head is not None and head.revision == revisions[-1]
    assert [m.revision for m in await store.history(limit=len(revisions))] == revisions[::-1]

    # No event lost or stored twice: read the stream by sequence.
    counts = Counter(await stream_event_ids(writer_bus))
    assert [i for i in published if counts[i] != 1] == [], "acknowledged events lost or duplicated"
    assert [i for i, n in counts.items() if n > 1] == [], "events stored twice"
    changed = [m.revision for m in await _config_changed(writer_bus)]  # one config.changed per committed revision
    assert Counter(changed)[revisions[-1]] == 1 and set(revisions) <= set(changed)
    assert all(Counter(changed)[r] == 1 for r in revisions)

    # The follower and the stream subscriber carried on: they reach the last revision / every event.
    await wait_for(lambda: _at_least(bool(seen_revisions) and seen_revisions[-1] == revisions[-1]), "the follower")
    wanted = set(published)
    await wait_for(lambda: _at_least(wanted <= set(received)), "the subscriber to get every event")
    assert len(received) == len(set(received)), "the subscriber handled an event twice"
    follower.cancel()


async def _at_least(ok: bool) -> bool:
    return ok


async def _config_changed(bus: Bus) -> list[ConfigChanged]:
    out = []
    info = await bus.js.stream_info(EVENT_STREAM)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENT_STREAM, seq)
        if msg.subject == ConfigChanged.subject_base():
            _meta, event = decode(msg.subject, msg.headers, msg.data or b"")
            assert isinstance(event, ConfigChanged)
            out.append(event)
    return out


def gauge(text: str, name: str, stream: str) -> float | None:
    """A labelled sample from a /metrics page."""
    prefix = f'{name}{{stream="{stream}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


@contextlib.contextmanager
def config_service(cluster: NatsCluster, workdir: Path, env: dict[str, str]) -> Iterator[tuple[ConfigService, str]]:
    """The real config service, given every server of the cluster, and its first /metrics page (with
    its streams' replica gauges); killed at the end."""
    svc = ConfigService(cluster.nodes[0], workdir, env, nats_url=",".join(cluster.urls)).start()
    try:
        yield svc, svc.metrics()
    finally:
        svc.stop(kill=True)


async def test_real_config_service_applies_again_after_its_leader_dies(
    cluster: NatsCluster, buses: list[Bus], tmp_path: Path, child_env: dict[str, str]
) -> None:
    with config_service(cluster, tmp_path / "config", child_env) as (svc, page):
        assert gauge(page, "vgw_js_replicas", CONFIG_STREAM) == 3.0, page
        assert gauge(page, "vgw_js_replicas_mismatch", CONFIG_STREAM) == 0.0
        assert gauge(page, "vgw_js_replicas", EVENT_STREAM) == 3.0
        watcher = await connect(buses, cluster.urls, "watcher")
        victim = cluster.node(await leader(watcher, CONFIG_STREAM))
        applied: list[int] = []
        async with ConfigClient(svc.addr, actor="tester", timeout_s=DEADLINE_S) as c:
            for weight in (1, 2):
                applied.append((await c.apply(_doc_bytes(weight), reason=f"w{weight}")).revision)
            victim.stop(kill=True)
            # The service's own retries carry an apply through the election: no error, no lost revision.
            for weight in (3, 4):
                applied.append((await c.apply(_doc_bytes(weight), reason=f"w{weight}")).revision)
            history = await c.history(limit=10)
        assert applied == [1, 2, 3, 4]
        assert [m.revision for m in history.revisions] == [4, 3, 2, 1]
        assert svc.readyz() == 200


def _doc_bytes(weight: int) -> bytes:
    return document(weight).model_dump_json(exclude_defaults=True).encode()


async def test_bucket_with_fewer_replicas_is_reported_and_left_alone(
    cluster: NatsCluster, buses: list[Bus], tmp_path: Path, child_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Made R1 by an old release (or a hand-made bucket), in a cluster where VGW_JS_REPLICAS wants 3.
    old = await connect(buses, cluster.urls, "old", js_replicas=1)
    await ConfigStore(old).open()
    await old.ensure_event_stream()
    assert (await old.js.stream_info(CONFIG_STREAM)).config.num_replicas == 1

    with config_service(cluster, tmp_path / "config", child_env) as (svc, page):
        assert gauge(page, "vgw_js_replicas", CONFIG_STREAM) == 1.0, page
        assert gauge(page, "vgw_js_replicas_mismatch", CONFIG_STREAM) == 1.0
        assert gauge(page, "vgw_js_replicas_mismatch", EVENT_STREAM) == 1.0
        assert "vgw_js_replicas_wanted 3.0" in page
        errors = [line for line in svc.log.read_text().splitlines() if "replica" in line and '"ERROR"' in line.upper()]
        assert any(CONFIG_STREAM in line and "wants 3" in line for line in errors), svc.log.read_text()[-3000:]
    # Reported, not repaired: the stream still has the replicas it was made with.
    assert (await old.js.stream_info(CONFIG_STREAM)).config.num_replicas == 1

    # The same check in this process, for a KV bucket of the library: logged once at ERROR, in metrics.
    await KvStore.open(old, "t_health_r1", ConfigChanged)
    wants3 = await connect(buses, cluster.urls, "wants3", js_replicas=3)
    with caplog.at_level(logging.ERROR, logger="vgw.jsreplicas"):
        await KvStore.open(wants3, "t_health_r1", ConfigChanged)
        await KvStore.open(wants3, "t_health_r1", ConfigChanged)
    lines = [r.getMessage() for r in caplog.records if "KV_t_health_r1" in r.getMessage()]
    assert len(lines) == 1 and "has 1 replica(s) but VGW_JS_REPLICAS wants 3" in lines[0], lines
    assert REGISTRY.get_sample_value("vgw_js_replicas_mismatch", {"stream": "KV_t_health_r1"}) == 1.0
    # A bucket it creates itself has what it wants.
    await KvStore.open(wants3, "t_fresh", ConfigChanged)
    assert (await wants3.js.stream_info("KV_t_fresh")).config.num_replicas == 3
    assert REGISTRY.get_sample_value("vgw_js_replicas_mismatch", {"stream": "KV_t_fresh"}) == 0.0


async def test_replaying_subscription_survives_the_loss_of_its_consumers_server(
    cluster: NatsCluster, buses: list[Bus]
) -> None:
    """A ``since`` subscription is an ordered consumer on one server; when that server dies, nats-py
    re-creates it elsewhere. Created by start time, the re-creation was refused for good (err 10094)."""
    pub = await connect(buses, cluster.urls, "pub")
    await pub.ensure_event_stream()
    old = [(await pub.publish(status_event(i))).id for i in range(3)]
    since = datetime.now(UTC)  # the events published from here on are stored at `since` or later
    first = [(await pub.publish(status_event(i))).id for i in range(3, 6)]
    got: list[str] = []

    async def on_event(r: Received) -> None:
        got.append(r.meta.id)

    # The subscriber stays connected (no reconnect re-creates its consumer): it must not be on the
    # server that hosts its consumer. Placement is the cluster's choice, so subscribe until it fits.
    for attempt in range(20):
        sub_bus = await connect(buses, [cluster.urls[attempt % len(cluster.urls)]], f"sub{attempt}")
        sub = await sub_bus.subscribe(on_event, types=[DataplaneStatus], since=since)
        await wait_for(lambda: _at_least(len(got) >= 3), "the replay")
        consumers = await pub.js.consumers_info(EVENT_STREAM)
        assert len(consumers) == 1 and consumers[0].cluster is not None
        host = cluster.node(str(consumers[0].cluster.leader))
        if host.url != sub_bus.nc.connected_url.geturl():  # type: ignore[union-attr]
            break
        await sub.unsubscribe()
        await wait_for(lambda: _no_consumers(pub), "the consumer to go")
        got.clear()
    else:
        pytest.fail("every subscription's consumer was on the subscriber's own server")
    host.stop(kill=True)
    later = [(await pub.publish(status_event(i))).id for i in range(6, 9)]
    assert await pub.wait_published(timeout=DEADLINE_S)
    await wait_for(lambda: _at_least(set(later) <= set(got)), "events after the consumer's server died")
    assert got == first + later and not set(old) & set(got)


async def _no_consumers(bus: Bus) -> bool:
    return not await bus.js.consumers_info(EVENT_STREAM)


async def test_heartbeats_reach_live_subscribers_while_the_event_stream_cannot_store(
    cluster: NatsCluster, buses: list[Bus]
) -> None:
    """The forwarder's heartbeat (``dataplane.status``) is what route control announces on. Through
    the stream it would stop whenever the stream has no leader -- an election after a server loss --
    and every node would be withdrawn at once. Published and subscribed live (core NATS), it still
    arrives: here two of three servers are gone, so the stream has no quorum at all."""
    survivor = cluster.nodes[2]
    pub = await connect(buses, [survivor.url], "shim")
    sub_bus = await connect(buses, [survivor.url], "routectl")
    await pub.ensure_event_stream()
    await move_leader(pub, EVENT_STREAM, cluster.nodes[0].name)
    got: list[int] = []

    async def on_status(r: Received) -> None:
        assert isinstance(r.event, DataplaneStatus)
        got.append(r.event.seq)

    await sub_bus.subscribe(on_status, subject=f"{DataplaneStatus.subject_base()}.node-a", live=True)
    for node in cluster.nodes[:2]:
        node.stop(kill=True)
    # the stream cannot store: an ordinary publish stays in the outbox
    await pub.publish(status_event(0), timeout=1.0)
    assert pub.outbox_size == 1
    for i in range(1, 6):
        await pub.publish(status_event(i), live=True)
    # (the unstored event reaches core subscribers too, at each retry of the outbox)
    await wait_for(lambda: _at_least([s for s in got if s] == [1, 2, 3, 4, 5]), f"the live heartbeats ({got})", 30)
    assert pub.outbox_size == 1  # still unstored: the heartbeats did not wait for it


async def test_a_live_subscription_cannot_queue_or_replay(cluster: NatsCluster, buses: list[Bus]) -> None:
    bus = await connect(buses, cluster.urls, "bad")

    async def ignore(r: Received) -> None:
        pass

    with pytest.raises(ValueError, match="live subscription"):
        await bus.subscribe(ignore, subject="vgw.v1.dataplane.status.x", live=True, queue="q")
    with pytest.raises(ValueError, match="live subscription"):
        await bus.subscribe(ignore, subject="vgw.v1.dataplane.status.x", live=True, since=datetime.now(UTC))
