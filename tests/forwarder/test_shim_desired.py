"""The shim's desired state and deltas, checked against a real vgw-fwd.

Unit part: config + health -> desired state (health down drains, config states win, initial state,
IPv6 skipped; flood protection rendered as service-line options). Property part: for random
sequences of desired states (protection included), applying the shim's delta to a running
forwarder (ring vdevs, no namespaces needed) leaves exactly the state a full apply of the new
document leaves (the forwarder's canonical CONFIG dump is compared).
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dataplane.shim.desired import (
    FWD_DEFAULT_PROTECTION,
    DesiredState,
    FwdBackend,
    FwdService,
    delta,
    desired_state,
    render,
)
from vgw.config import EffectiveProtection
from vgw.config.validate import load_document
from vgw.events import BackendState, ProbeResult
from vgw.fwdctl import FwdClient
from vgw.health import HealthEntry, health_key

DOC = """
version: 1
timeouts: {tcp_established: 120s}
clusters: [{name: lab}]
nodes:
  - {id: n1, cluster: lab, external: {address: 203.0.113.1/24}, internal: {address: 198.18.0.1/24},
     lip_pool: [198.18.0.100, 198.18.0.101]}
  - {id: n2, cluster: lab, external: {address: 203.0.113.2/24}, internal: {address: 198.18.0.2/24},
     lip_pool: [198.18.0.102]}
health_checks:
  - {name: hc, kind: tcp, initial_state: down}
  - {name: hc-unknown, kind: tcp}
vips:
  - address: 192.0.2.10
    cluster: lab
    services:
      - name: web
        port: 80
        health_check: hc
        timeouts: {tcp_syn_recv: 10s}
        backends:
          - {address: 198.18.0.11, port: 80}
          - {address: 198.18.0.12, port: 80, weight: 50}
          - {address: 198.18.0.13, port: 80, state: draining}
          - {address: 198.18.0.14, port: 80, state: disabled}
      - name: dns
        port: 53
        protocol: udp
        scheduler: wlc
        health_check: hc-unknown
        backends: [{address: 198.18.0.21, port: 53}]
  - address: 192.0.2.20
    cluster: lab
    nodes: [n2]
    services: [{name: other, port: 80, backends: [{address: 198.18.0.31, port: 80}]}]
"""


def entry(ip: str, port: int, check: str, state: BackendState) -> HealthEntry:
    return HealthEntry(
        address=ip,
        port=port,
        check=check,
        kind="tcp",
        state=state,
        reason=ProbeResult.OK if state == BackendState.UP else ProbeResult.TIMEOUT,
        since=datetime.now(UTC),
        checker="t",
    )


def test_desired_state_from_config_and_health() -> None:
    doc = load_document(DOC)
    health = {
        health_key("198.18.0.11", 80, "hc"): entry("198.18.0.11", 80, "hc", BackendState.UP),
        health_key("198.18.0.13", 80, "hc"): entry("198.18.0.13", 80, "hc", BackendState.UP),
    }
    st = desired_state(doc, health, "n1", 7)
    assert st.config_revision == 7
    assert st.vips == ["192.0.2.10"]  # 192.0.2.20 is served by n2 only
    assert [s.name for s in st.services] == ["dns", "web"]
    web = next(s for s in st.services if s.name == "web")
    assert web.lips == ("198.18.0.100", "198.18.0.101")
    assert ("tcp_syn_recv", 10) in web.timeouts and web.toa
    states = {b.address: b.state for b in web.backends}
    assert states == {
        "198.18.0.11": "active",  # up
        "198.18.0.12": "draining",  # no entry yet, initial_state down
        "198.18.0.13": "draining",  # config draining wins over health up
        "198.18.0.14": "disabled",
    }
    dns = next(s for s in st.services if s.name == "dns")
    assert dns.backends[0].state == "active"  # initial_state unknown counts as up
    assert not dns.toa and dns.scheduler == "wlc"
    assert ("tcp_established", 120) in st.timeouts
    # health down drains an enabled backend, with the reason
    health[health_key("198.18.0.11", 80, "hc")] = entry("198.18.0.11", 80, "hc", BackendState.DOWN)
    st2 = desired_state(doc, health, "n1", 7)
    b = next(b for s in st2.services if s.name == "web" for b in s.backends if b.address == "198.18.0.11")
    assert b.state == "draining" and "timeout" in b.reason
    # unknown node: empty state
    assert desired_state(doc, health, "nope", 7).services == ()
    doc_text = render(st, 3)
    assert doc_text.startswith("vgw-config 1\ngeneration 3\n") and doc_text.endswith("end\n")


# --- flood protection -------------------------------------------------------------------------------


def protected_doc() -> dict[str, object]:
    raw = load_document(DOC).model_dump(mode="json", exclude_defaults=True)
    vip = raw["vips"][0]
    vip["protection"] = {"syn_proxy": "auto", "auto_half_open": 500, "conn_rate_per_source_24": 20}
    vip["services"][0]["protection"] = {"auto_syn_rate": 9000, "conn_rate": 1000, "rst_unknown": True}
    vip["services"][1]["protection"] = {"conn_rate": 50}  # dns (udp)
    return raw


def headers(raw: object) -> dict[str, str]:
    st = desired_state(load_document(json.dumps(raw)), {}, "n2", 1)
    return {s.name: s.header() for s in st.services}


def test_protection_rendered_as_service_options() -> None:
    # Defaults: a TCP service gets the SYN proxy in auto mode (the forwarder's own default is off);
    # UDP gets nothing; thresholds at their defaults are not written.
    assert headers(load_document(DOC).model_dump(mode="json")) == {
        "dns": "dns udp 192.0.2.10 53 wlc toa=off",
        "other": "other tcp 192.0.2.20 80 maglev toa=on syn_proxy=auto",
        "web": "web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto timeout.tcp_syn_recv=10",
    }
    # The VIP's block, overridden field by field; UDP takes the caps only.
    assert headers(protected_doc()) == {
        "dns": "dns udp 192.0.2.10 53 wlc toa=off conn_rate=50 conn_rate_src24=20",
        "other": "other tcp 192.0.2.20 80 maglev toa=on syn_proxy=auto",
        "web": "web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto syn_proxy_halfopen=500 syn_proxy_syn_rate=9000 "
        "conn_rate=1000 conn_rate_src24=20 rst_unknown=on timeout.tcp_syn_recv=10",
    }
    # Thresholds are written for auto only; off writes nothing.
    raw = protected_doc()
    raw["vips"][0]["services"][0]["protection"] = {"syn_proxy": "on"}  # type: ignore[index]
    assert headers(raw)["web"] == (
        "web tcp 192.0.2.10 80 maglev toa=on syn_proxy=on conn_rate_src24=20 timeout.tcp_syn_recv=10"
    )
    raw["vips"][0]["protection"] = {"syn_proxy": "off"}  # type: ignore[index]
    raw["vips"][0]["services"][0]["protection"] = {}  # type: ignore[index]
    assert headers(raw)["web"] == "web tcp 192.0.2.10 80 maglev toa=on timeout.tcp_syn_recv=10"


def test_a_protection_change_replaces_the_service_in_a_delta() -> None:
    doc = load_document(DOC)
    health = {health_key("198.18.0.11", 80, "hc"): entry("198.18.0.11", 80, "hc", BackendState.UP)}
    old = desired_state(doc, health, "n1", 1)
    new = desired_state(load_document(json.dumps(protected_doc())), health, "n1", 2)
    d = delta(old, new, 8)
    assert d is not None
    text, nops = d
    web = next(s for s in new.services if s.name == "web")
    dns = next(s for s in new.services if s.name == "dns")
    assert text.splitlines() == [
        "vgw-delta 1",
        "generation 8",
        "service remove dns",
        f"service add {dns.header()}",
        "lip add dns 198.18.0.100",
        "lip add dns 198.18.0.101",
        "backend add dns 198.18.0.21 53 100 active",
        "service remove web",
        f"service add {web.header()}",
        "lip add web 198.18.0.100",
        "lip add web 198.18.0.101",
        "backend add web 198.18.0.11 80 100 active",
        "backend add web 198.18.0.12 80 50 draining",
        "backend add web 198.18.0.13 80 100 draining",
        "backend add web 198.18.0.14 80 100 disabled",
        "end",
    ]
    assert nops == 13
    assert "rst_unknown=on" in web.header() and "conn_rate=50" in dns.header()
    # Unchanged protection: nothing to do.
    assert delta(new, new, 9) == ("vgw-delta 1\ngeneration 9\nend\n", 0)


PROTECTIONS = [
    FWD_DEFAULT_PROTECTION,
    EffectiveProtection("auto", 10000, 100000, 0, 0, False),
    EffectiveProtection("auto", 64, 2000, 0, 0, False),
    EffectiveProtection("on", 10000, 100000, 300, 40, True),
    EffectiveProtection("off", 10000, 100000, 7, 0, False),
]


async def test_a_protection_change_reaches_the_forwarder(ring_fwd: Path) -> None:
    doc = load_document(DOC)
    old = desired_state(doc, {}, "n1", 1)
    new = desired_state(load_document(json.dumps(protected_doc())), {}, "n1", 2)
    c = FwdClient(str(ring_fwd))
    try:
        gen = await c.apply(render(old, 1))
        got = await c.config()
        assert "service web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto timeout.tcp_syn_recv=10\n" in got
        d = delta(old, new, gen + 1)
        assert d is not None
        gen = await c.delta(d[0])
        got = await c.config()
        assert canon(got) == canon(render(new, gen))
        assert (
            "service web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto syn_proxy_halfopen=500 "
            "syn_proxy_syn_rate=9000 conn_rate=1000 conn_rate_src24=20 rst_unknown=on timeout.tcp_syn_recv=10\n"
        ) in got
        assert "service dns udp 192.0.2.10 53 wlc conn_rate=50 conn_rate_src24=20\n" in got
        # and back: the forwarder forgets the options again
        gen = await c.delta(delta(new, old, gen + 1)[0])  # type: ignore[index]
        assert canon(await c.config()) == canon(render(old, gen))
    finally:
        await c.close()


def random_state(rng: random.Random) -> DesiredState:
    services = []
    for i in rng.sample(range(6), rng.randint(0, 5)):
        lips = tuple(sorted(rng.sample([f"198.18.1.{n}" for n in range(1, 6)], rng.randint(1, 3))))
        backends = tuple(
            FwdBackend(f"198.18.2.{n}", 80 + (n % 2), rng.choice([0, 1, 100]), rng.choice(["active", "draining"]))
            for n in sorted(rng.sample(range(1, 30), rng.randint(0, 6)))
        )
        services.append(
            FwdService(
                name=f"s{i}",
                protocol="udp" if i == 5 else "tcp",
                vip=f"192.0.2.{10 + i % 3}",
                port=80 + i,
                scheduler=rng.choice(["maglev", "wrr", "wlc"]),
                table=rng.choice([None, 251]),
                toa=i != 5 and rng.random() < 0.5,
                timeouts=(("tcp_syn_recv", 10),) if rng.random() < 0.3 else (),
                lips=lips,
                backends=backends,
                protection=rng.choice(PROTECTIONS),
            )
        )
    return DesiredState(node="n1", config_revision=1, timeouts=(), services=tuple(services))


async def test_delta_equals_full_apply(ring_fwd: Path) -> None:
    rng = random.Random(11)
    c = FwdClient(str(ring_fwd))
    try:
        cur = random_state(rng)
        gen = await c.apply(render(cur, 1))
        for _ in range(60):
            new = random_state(rng) if rng.random() < 0.3 else mutate(rng, cur)
            d = delta(cur, new, gen + 1)
            assert d is not None
            doc, nops = d
            if nops:
                gen = await c.delta(doc)
            got = await c.config()
            # the forwarder's canonical dump of a full apply of `new`, for comparison
            want = render(new, gen)
            assert canon(got) == canon(want), doc
            cur = new
    finally:
        await c.close()


def mutate(rng: random.Random, st: DesiredState) -> DesiredState:
    services = list(st.services)
    if not services:
        return random_state(rng)
    i = rng.randrange(len(services))
    s = services[i]
    bs = list(s.backends)
    op = rng.randrange(4)
    if op == 0 and bs:
        k = rng.randrange(len(bs))
        b = bs[k]
        bs[k] = FwdBackend(b.address, b.port, b.weight, "draining" if b.state == "active" else "active")
    elif op == 1 and bs:
        bs.pop(rng.randrange(len(bs)))
    elif op == 2:
        addr = f"198.18.3.{rng.randint(1, 200)}"
        if all(b.address != addr for b in bs):
            bs.append(FwdBackend(addr, 80, 7, "active"))
    elif bs:
        k = rng.randrange(len(bs))
        b = bs[k]
        bs[k] = FwdBackend(b.address, b.port, rng.randint(0, 500), b.state)
    protection = rng.choice(PROTECTIONS) if rng.random() < 0.2 else s.protection
    services[i] = dataclasses.replace(s, backends=tuple(bs), protection=protection)
    return DesiredState(st.node, st.config_revision, st.timeouts, tuple(services))


def canon(doc: str) -> list[tuple[str, tuple[str, ...]]]:
    """A vgw-config document as sorted (service line, sorted lip/backend lines), without the
    generation and document timeouts; options the forwarder prints only when set are normalised."""
    blocks: dict[str, list[str]] = {}
    cur: list[str] | None = None
    for ln in doc.splitlines():
        if not ln or ln.startswith(("vgw-config", "generation", "timeout ")) or ln == "end":
            continue
        if ln.startswith("service "):
            cur = blocks.setdefault(ln.replace(" toa=off", "").replace(" table=65537", ""), [])
        else:
            assert cur is not None, ln
            cur.append(ln)
    return sorted((k, tuple(sorted(v))) for k, v in blocks.items())


def test_fwd_settings_rendered_from_node(tmp_path: Path) -> None:
    from dataplane.shim.fwdargs import main as fwdargs_main
    from dataplane.shim.fwdargs import render_settings

    doc = load_document(DOC)
    node = doc.node("n1")
    assert node is not None
    text = render_settings(node, "net_af_packet0", "net_af_packet1", "/run/x.sock")
    assert "mode dual-arm\next net_af_packet0 203.0.113.1/24\nint net_af_packet1 198.18.0.1/24\n" in text
    assert "socket /run/x.sock" in text
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DOC)
    assert fwdargs_main(["--config", str(cfg), "--node", "nope"]) == 2
    with pytest.raises(ValueError, match="no DPDK device"):
        render_settings(node)
