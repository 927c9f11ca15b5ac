"""vgw-fwd's flood-protection observability and process side, with a real forwarder.

* STATS and DPDK telemetry carry the new counters: the core's events and drop reasons, every
  per-service protection counter in each service's block, the per-LIP block, half-open entries per
  worker; the shim's collector turns that reply into its metrics.
* ``--syn-cookie-key-file``: a key file readable by its owner only is taken (raw bytes, hex, the
  settings-file form); one that group or others may read, one owned by another user, a short, an
  all-zero or a missing one is refused with a clear error and exit code 2.
* Through ``net_pcap`` (packet in, packet out): a SYN to a proxied service is answered with a
  cookie SYN-ACK towards the client and a segment without a connection with a RST, and neither
  counts as the service's traffic nor enters its active connections; a second forwarder with the
  same key file validates the client's ACK (the connection appears then: conn_new, packets in, the
  active gauge), one with its own random key does not.
* Per-service counters belong to one (service, uid) pair: a service that gets a reused uid starts
  from zero, and a service removed and added again in one delta keeps its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.fwdproc import until, vgw_fwd
from tests.forwarder.topology import FWD_BIN, Topology
from vgw.fwdctl import FwdClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not FWD_BIN.exists(), reason="needs root and vgw-fwd")

VIP, LIP, BACKEND, CLIENT = "192.0.2.10", "198.18.0.100", "198.18.0.11", "203.0.113.7"
BACKEND_MAC, CLIENT_MAC, GW_MAC = "02:00:00:00:01:00", "02:00:00:00:00:07", "02:00:00:00:00:fe"
RING_EAL = ["--lcores", "0@0,1@0", "--vdev", "net_ring0", "--vdev", "net_ring1"]
RING_ARGS = ["--ext", "net_ring0,203.0.113.1/24", "--int", "net_ring1,198.18.0.1/16", "--workers", "1",
             "--conn-capacity", "4096"]  # fmt: skip

COUNTERS_H = FWD_BIN.parents[1] / "core" / "include" / "vgw" / "counters.h"


def core_names(macro: str) -> list[str]:
    """The names of one X-macro list of the core's counters.h (so this test follows the core)."""
    text = COUNTERS_H.read_text()
    body = text[text.index(f"#define {macro}(X)") :]
    body = body[: body.index("\n\n")]
    return re.findall(r'X\(\w+,\s*"(\w+)"\)', body)


SVC_COUNTERS = core_names("VGW_SVC_COUNTERS")
# what flood protection added to the node-wide counters (the STATS names of events and drop reasons)
NODE_EVENTS = core_names("VGW_EVENT_COUNTERS")
NODE_DROPS = [f"drop_{n}" for n in core_names("VGW_DROP_REASONS") if n != "none"]
PROTECTION = {"syn_cookie_sent", "syn_cookie_ok", "syn_cookie_bad", "conn_halfopen", "conn_evicted", "rst_sent",
              "lport_exhausted", "drop_limit_cps", "drop_limit_src24", "drop_synproxy_bad_cookie"}  # fmt: skip


def stats(sock: Path) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        c = FwdClient(str(sock))
        try:
            return await c.stats()
        finally:
            await c.close()

    return asyncio.run(go())


def ctl(sock: Path, kind: str, doc: str) -> int:
    async def go() -> int:
        c = FwdClient(str(sock))
        try:
            return await (c.apply(doc) if kind == "apply" else c.delta(doc))
        finally:
            await c.close()

    return asyncio.run(go())


def vgwctl_forwarder(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", "forwarder", "--socket", str(sock), *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def telemetry(prefix: str, cmd: str) -> Any:
    """One command on DPDK's telemetry socket (what dpdk-telemetry.py does)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
        info = json.loads(s.recv(4096))
        s.send(cmd.encode())
        return json.loads(s.recv(int(info["max_output_len"])))[cmd.split(",", 1)[0]]


def doc(generation: int, services: list[tuple[str, str, int, str]]) -> str:
    """A vgw-config 1 document: (name, proto, port, options) per service, all on VIP, LIP, BACKEND."""
    lines = ["vgw-config 1", f"generation {generation}"]
    for name, proto, port, opts in services:
        lines += [f"service {name} {proto} {VIP} {port} wlc {opts}".rstrip(), f"lip {name} {LIP}",
                  f"backend {name} {BACKEND} {port} 1 active"]  # fmt: skip
    return "\n".join([*lines, "end", ""])


# --- STATS, telemetry, metrics ---------------------------------------------------------------------


def test_stats_and_telemetry_carry_the_protection_counters(tmp_path: Path) -> None:
    state = tmp_path / "state.conf"
    state.write_text(doc(1, [("web", "tcp", 80, ""), ("dns", "udp", 53, "")]))
    with vgw_fwd(tmp_path, RING_EAL, [*RING_ARGS, "--apply", str(state)]) as f:
        st = stats(f.socket)
        counters = st["counters"]
        assert set(NODE_EVENTS + NODE_DROPS) >= PROTECTION
        assert set(NODE_EVENTS + NODE_DROPS) <= set(counters), sorted(set(NODE_EVENTS + NODE_DROPS) - set(counters))
        assert all(isinstance(counters[k], int) for k in NODE_EVENTS + NODE_DROPS)
        assert {"syn_cookie_ok", "drop_no_conn", "syn_proxy_active"} <= set(SVC_COUNTERS)
        assert set(st["services"]) == {"web", "dns"}
        for name, svc in st["services"].items():
            missing = set(SVC_COUNTERS) - set(svc)
            assert not missing, (name, missing)
            assert all(svc[k] == 0 for k in SVC_COUNTERS), svc  # nothing happened yet
            assert {"packets_in", "conn_new", "conn_active", "vip", "port", "proto"} <= set(svc)
        assert st["lips"] == {}
        assert st["syn_cookie_key"] == "random"
        assert [set(w) >= {"conn_active", "conn_halfopen"} for w in st["per_worker"]] == [True]

        # DPDK telemetry: the same counters
        svc = telemetry(f.prefix, "/vgw/service,web")
        assert set(SVC_COUNTERS) <= set(svc) and svc["vip"] == VIP
        tstats = telemetry(f.prefix, "/vgw/stats")
        assert set(NODE_EVENTS) <= set(tstats)
        assert set(NODE_DROPS) <= set(telemetry(f.prefix, "/vgw/drops"))
        assert "conn_halfopen" in telemetry(f.prefix, "/vgw/workers")["worker0"]
        assert telemetry(f.prefix, "/vgw/lips") == {}

    # the shim's collector, fed with this real reply
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from dataplane.shim.main import ForwarderCollector

    reg = CollectorRegistry()
    reg.register(ForwarderCollector(SimpleNamespace(fwd_up=True, last_stats=st)))  # type: ignore[arg-type]
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    cookies = fams["vgw_forwarder_service_syn_cookies"]
    assert cookies.type == "counter"
    assert {(s.labels["service"], s.labels["vip"], s.labels["result"]) for s in cookies.samples
            if s.name.endswith("_total")} == {("web", VIP, r) for r in ("sent", "ok", "bad")}  # fmt: skip
    assert fams["vgw_forwarder_half_open_connections"].type == "gauge"
    assert fams["vgw_forwarder_service_syn_proxy_active"].type == "gauge"
    limits = {(s.labels["service"], s.labels["limit"]) for s in fams["vgw_forwarder_service_limit_drops"].samples
              if s.name.endswith("_total")}  # fmt: skip
    assert limits == {("web", "cps"), ("web", "src24"), ("dns", "cps"), ("dns", "src24")}
    assert "vgw_forwarder_lip_port_exhausted" in fams
    events = {s.labels["event"] for s in fams["vgw_forwarder_events"].samples}
    assert "syn_cookie_sent" in events and "conn_halfopen" not in events  # a gauge is not an event counter


# --- --syn-cookie-key-file -------------------------------------------------------------------------


def key_file(tmp_path: Path, content: bytes, mode: int, name: str = "cookie.key") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    p.chmod(mode)
    return p


@pytest.mark.parametrize(
    ("content", "mode"),
    [
        (secrets.token_bytes(16), 0o600),
        (secrets.token_bytes(64), 0o400),
        (secrets.token_hex(16).encode() + b"\n", 0o600),  # openssl rand -hex 16
    ],
    ids=["raw-0600", "raw-long-0400", "hex-0600"],
)
def test_cookie_key_file_readable_by_its_owner_only_is_taken(tmp_path: Path, content: bytes, mode: int) -> None:
    key = key_file(tmp_path, content, mode)
    with vgw_fwd(tmp_path, RING_EAL, [*RING_ARGS, "--syn-cookie-key-file", str(key)]) as f:
        assert stats(f.socket)["syn_cookie_key"] == "file"


def test_cookie_key_file_in_the_settings_file(tmp_path: Path) -> None:
    key = key_file(tmp_path, secrets.token_bytes(16), 0o600)
    settings = tmp_path / "fwd.conf"
    settings.write_text(
        "mode dual-arm\next net_ring0 203.0.113.1/24\nint net_ring1 198.18.0.1/16\nworkers 1\n"
        f"conn-capacity 4096\nsyn-cookie-key-file {key}\n"
    )
    with vgw_fwd(tmp_path, RING_EAL, ["--config", str(settings)]) as f:
        assert stats(f.socket)["syn_cookie_key"] == "file"


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (lambda d: key_file(d, secrets.token_bytes(16), 0o644), r"mode 0644 gives group or others access to the key"),
        (lambda d: key_file(d, secrets.token_bytes(16), 0o640), r"mode 0640 gives group or others access"),
        (lambda d: key_file(d, secrets.token_bytes(16), 0o602), r"mode 0602 gives group or others access"),
        (lambda d: key_file(d, b"too short", 0o600), r"9 bytes; the key needs 16 bytes or 32 hex digits"),
        (lambda d: key_file(d, bytes(16), 0o600), r"the key is all zero"),
        (lambda d: d / "missing.key", r"No such file or directory"),
        (lambda d: d, r"not a regular file"),
    ],
    ids=["0644", "0640", "0602", "short", "zero", "missing", "directory"],
)
def test_cookie_key_file_refused(tmp_path: Path, setup: Any, error: str) -> None:
    path = setup(tmp_path)
    with (
        pytest.raises(RuntimeError, match=r"exited with 2") as exc,
        vgw_fwd(tmp_path, RING_EAL, [*RING_ARGS, "--syn-cookie-key-file", str(path)]),
    ):
        pass
    assert f"vgw-fwd: syn-cookie-key-file {path}: " in str(exc.value)
    assert re.search(error, str(exc.value)), str(exc.value)[-600:]


def test_cookie_key_file_of_another_user_refused(tmp_path: Path) -> None:
    key = key_file(tmp_path, secrets.token_bytes(16), 0o600)
    os.chown(key, 65534, 65534)
    with (
        pytest.raises(RuntimeError, match=r"exited with 2") as exc,
        vgw_fwd(tmp_path, RING_EAL, [*RING_ARGS, "--syn-cookie-key-file", str(key)]),
    ):
        pass
    assert "owned by uid 65534; it must be owned by root or by the forwarder's user" in str(exc.value)


# --- the SYN proxy's packets and the per-service accounting (net_pcap) -----------------------------


@contextlib.contextmanager
def pcap_forwarder(tmp_path: Path, name: str, frames: list[Any], state: str, extra: list[str]) -> Any:
    """A single-arm vgw-fwd that reads `frames` once and writes what it sends to a capture; yields
    (socket, output pcap path) while it runs."""
    from scapy.all import wrpcap

    rx, tx = tmp_path / f"{name}-in.pcap", tmp_path / f"{name}-out.pcap"
    wrpcap(str(rx), frames)
    conf = tmp_path / f"{name}.conf"
    conf.write_text(state)
    eal = ["--lcores", "0@0,1@0", "--vdev", f"net_pcap0,rx_pcap={rx},tx_pcap={tx}"]
    args = [
        "--single-arm", "--ext", "net_pcap0,198.18.0.1/16", "--route", "0.0.0.0/0,198.18.0.254,ext",
        "--neigh", f"{BACKEND},{BACKEND_MAC},ext", "--neigh", f"198.18.0.254,{GW_MAC},ext",
        "--apply", str(conf), "--conn-capacity", "4096", *extra,
    ]  # fmt: skip
    with vgw_fwd(tmp_path, eal, args) as fwd:
        # every frame of the capture has been through the core once the port counted it
        until(lambda: stats(fwd.socket)["ports"]["ext"]["rx_packets"], lambda n: n >= len(frames), "the capture read")
        yield fwd.socket, tx
    assert fwd.proc.returncode == 0, fwd.log.read_text()


def syn_flood_pcap(path: Path, n: int, dport: int) -> None:
    """n SYNs to VIP:dport, each from its own client tuple (203.0.113.0/24, ports from 1024), as
    a classic pcap written without scapy (it would take a minute for 65k frames)."""

    def csum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    vip = socket.inet_aton(VIP)
    eth = bytes.fromhex("0200000000aa") + bytes.fromhex(CLIENT_MAC.replace(":", "")) + b"\x08\x00"
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        src = socket.inet_aton(f"203.0.113.{1 + i // 64000}")
        tcp = struct.pack("!HHIIBBHHH", 1024 + i % 64000, dport, 1000 + i, 0, 5 << 4, 0x02, 65535, 0, 0)
        tcp = tcp[:16] + struct.pack("!H", csum(src + vip + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64, 6, 0, src, vip)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        frame = eth + ip + tcp
        out.append(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tcp_out(tx: Path) -> list[Any]:
    from scapy.all import TCP, rdpcap

    return [p for p in rdpcap(str(tx)) if TCP in p]


def proxy_state() -> str:
    return doc(1, [("web", "tcp", 80, "syn_proxy=on"), ("api", "tcp", 81, "rst_unknown=on")])


def test_syn_proxy_replies_are_not_service_traffic_and_the_ack_opens_the_connection(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Ether

    key = key_file(tmp_path, secrets.token_bytes(16), 0o600)
    eth = Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa")
    syn = eth / IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="S", seq=1000,
                                              options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])  # fmt: skip
    stray = eth / IP(src=CLIENT, dst=VIP) / TCP(sport=40002, dport=81, flags="A", seq=5000, ack=7000)
    forged = eth / IP(src=CLIENT, dst=VIP) / TCP(sport=40003, dport=80, flags="A", seq=9001, ack=12345)

    # 1. node A: a SYN -> cookie SYN-ACK; a segment without a connection -> RST; a forged ACK -> nothing
    with pcap_forwarder(tmp_path, "a", [syn, stray, forged], proxy_state(), ["--syn-cookie-key-file", str(key)]) as (
        sock,
        tx,
    ):
        st = until(lambda: stats(sock), lambda s: s["counters"]["syn_cookie_sent"] >= 1, "a cookie sent")
        web, api = st["services"]["web"], st["services"]["api"]
        assert (web["syn_cookie_sent"], web["syn_cookie_bad"], web["syn_proxy_active"]) == (1, 1, 1), web
        assert (api["rst_sent"], api["syn_proxy_active"]) == (1, 0), api
        for s in (web, api):  # the forwarder's own replies are not the service's traffic
            assert (s["packets_in"], s["packets_out"], s["conn_new"], s["conn_active"]) == (0, 0, 0, 0), s
        assert st["counters"]["conn_new"] == 0 and st["counters"]["conn_halfopen"] == 0
        time.sleep(0.3)  # a late shadow entry would show in the gauge by now
        assert stats(sock)["services"]["web"]["conn_active"] == 0
        # what an operator sees on the node
        r = vgwctl_forwarder(sock, "--interval", "0.2", "-o", "json")
        assert r.returncode == 0, r.stderr
        rows = {row["service"]: row for row in json.loads(r.stdout)["services"]}
        assert (rows["web"]["syn_proxy_workers"], rows["web"]["syn_cookie_sent"]) == (1, 1), rows
        assert (rows["api"]["syn_proxy_workers"], rows["api"]["rst_sent"]) == (0, 1), rows
        r = vgwctl_forwarder(sock, "--interval", "0")
        assert r.returncode == 0, r.stderr
        assert "SYN cookie key from a file (shared)" in r.stdout
        web_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("web "))
        assert f"{VIP}:80/tcp" in web_line and "on, 1/1 workers" in web_line, r.stdout
    out = tcp_out(tx)
    synack = [p for p in out if p[TCP].flags == "SA"]
    rst = [p for p in out if p[TCP].flags.R]
    assert len(synack) == 1 and len(rst) == 1 and len(out) == 2, [p.summary() for p in out]
    sa = synack[0]
    assert (sa[IP].src, sa[IP].dst, sa[TCP].sport, sa[TCP].dport, sa[TCP].ack) == (VIP, CLIENT, 80, 40001, 1001)
    assert sa[Ether].dst == GW_MAC  # towards the client: through the default route's gateway
    assert (rst[0][IP].src, rst[0][IP].dst, rst[0][TCP].sport, rst[0][TCP].dport) == (VIP, CLIENT, 81, 40002)
    cookie = sa[TCP].seq

    ack = eth / IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="A", seq=1001, ack=(cookie + 1) % 2**32)

    # 2. node B, same key: the client's ACK (ECMP moved the flow) validates; the connection opens
    with pcap_forwarder(tmp_path, "b", [ack], proxy_state(), ["--syn-cookie-key-file", str(key)]) as (sock, tx):
        st = until(lambda: stats(sock), lambda s: s["services"]["web"]["conn_active"] == 1, "the connection counted")
        web = st["services"]["web"]
        assert (web["syn_cookie_ok"], web["syn_cookie_bad"], web["conn_new"], web["packets_in"]) == (1, 0, 1, 1), web
        assert web["packets_out"] == 0
        assert st["counters"]["syn_cookie_ok"] == 1
    out = tcp_out(tx)
    assert len(out) == 1, [p.summary() for p in out]
    p = out[0]
    assert (p[IP].src, p[IP].dst, p[TCP].dport, p[TCP].flags, p[TCP].seq) == (LIP, BACKEND, 80, "S", 1000)
    assert p[Ether].dst == BACKEND_MAC

    # 3. node C, its own random key: the same ACK does not validate
    with pcap_forwarder(tmp_path, "c", [ack], proxy_state(), []) as (sock, tx):
        st = until(lambda: stats(sock), lambda s: s["services"]["web"]["syn_cookie_bad"] == 1, "the cookie refused")
        web = st["services"]["web"]
        assert (web["syn_cookie_ok"], web["conn_new"], web["packets_in"], web["conn_active"]) == (0, 0, 0, 0), web
    assert tcp_out(tx) == []


def test_service_counters_follow_the_service_not_the_uid(tmp_path: Path) -> None:
    """4096 services use up the core's uid space, so a service added after one is removed gets the
    removed one's uid (and its counts, in the core): the forwarder reports it from zero."""
    from scapy.all import IP, TCP, Ether

    eth = Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa")
    syns = [eth / IP(src=CLIENT, dst=VIP) / TCP(sport=41000 + i, dport=80, flags="S", seq=7) for i in range(3)]
    services = [("web", "tcp", 80, "syn_proxy=on")] + [(f"s{i}", "tcp", 1000 + i, "") for i in range(4095)]
    with pcap_forwarder(tmp_path, "u", syns, doc(1, services), []) as (sock, _tx):
        st = until(lambda: stats(sock), lambda s: s["services"]["web"]["syn_cookie_sent"] == 3, "three cookies")
        gen = st["generation"]
        # the same service removed and added again in one delta: it keeps its counts
        ctl(sock, "delta", f"vgw-delta 1\ngeneration {gen + 1}\nservice remove web\n"
                           f"service add web tcp {VIP} 80 wlc syn_proxy=on\nlip add web {LIP}\n"
                           f"backend add web {BACKEND} 80 1 active\nend\n")  # fmt: skip
        assert stats(sock)["services"]["web"]["syn_cookie_sent"] == 3
        # web goes; a new service takes its uid (the only free one): it starts from zero
        ctl(sock, "delta", f"vgw-delta 1\ngeneration {gen + 2}\nservice remove web\n"
                           f"service add other tcp {VIP} 8080 wlc syn_proxy=on\nlip add other {LIP}\n"
                           f"backend add other {BACKEND} 8080 1 active\nend\n")  # fmt: skip
        st = stats(sock)
        assert "web" not in st["services"]
        other = st["services"]["other"]
        assert all(other[k] == 0 for k in SVC_COUNTERS if k != "syn_proxy_active"), other
        assert other["syn_proxy_active"] == 1
        assert st["counters"]["syn_cookie_sent"] == 3  # the node's count is the node's


def test_lip_port_exhaustion_is_reported_per_lip_and_service(tmp_path: Path) -> None:
    """One LIP, one backend, one worker: 64512 ports (1024-65535). 64512 + 200 SYNs: the last 200
    find no port."""
    n, ports = 64512 + 200, 65536 - 1024
    rx, tx = tmp_path / "in.pcap", tmp_path / "out.pcap"
    syn_flood_pcap(rx, n, 80)
    conf = tmp_path / "state.conf"
    conf.write_text(doc(1, [("web", "tcp", 80, "timeout.tcp_syn_recv=600")]))
    eal = ["--lcores", "0@0,1@0", "--vdev", f"net_pcap0,rx_pcap={rx},tx_pcap={tx}"]
    args = ["--single-arm", "--ext", "net_pcap0,198.18.0.1/16", "--route", "0.0.0.0/0,198.18.0.254,ext",
            "--neigh", f"{BACKEND},{BACKEND_MAC},ext", "--neigh", f"198.18.0.254,{GW_MAC},ext",
            "--apply", str(conf), "--conn-capacity", "131072", "--mbufs", "16383"]  # fmt: skip
    with vgw_fwd(tmp_path, eal, args, memory_mb=256) as f:
        st = until(lambda: stats(f.socket), lambda s: s["ports"]["ext"]["rx_packets"] >= n, "the flood read", 60)
        st = until(lambda: stats(f.socket), lambda s: s["counters"]["conn_halfopen"] == ports, "the table", 10)
        c = st["counters"]
        assert (c["conn_new"], c["lport_exhausted"], c["drop_no_lport"]) == (ports, 200, 200), c
        assert st["lips"] == {LIP: {"lport_exhausted": 200}}
        web = st["services"]["web"]
        assert (web["lport_exhausted"], web["conn_new"]) == (200, ports), web
        assert st["per_worker"][0]["conn_halfopen"] == ports
        assert telemetry(f.prefix, "/vgw/lips") == {"lip0": {"lip": LIP, "lport_exhausted": 200}}
        r = vgwctl_forwarder(f.socket, "--interval", "0")
        assert r.returncode == 0, r.stderr
        assert f"half-open {ports / 1000:.1f}k" in r.stdout, r.stdout
        assert any(ln.split() == [LIP, "200"] for ln in r.stdout.splitlines()), r.stdout
    from prometheus_client import CollectorRegistry, generate_latest

    from dataplane.shim.main import ForwarderCollector

    reg = CollectorRegistry()
    reg.register(ForwarderCollector(SimpleNamespace(fwd_up=True, last_stats=st)))  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    assert f'vgw_forwarder_lip_port_exhausted_total{{lip="{LIP}"}} 200.0' in text
    assert f"vgw_forwarder_half_open_connections {float(ports)}" in text
    assert f'vgw_forwarder_service_lip_port_exhausted_total{{service="web",vip="{VIP}"}} 200.0' in text


# --- client steering (VGW_WF_STEER_CLIENTS) ------------------------------------------------------

NULL_EAL = ["--lcores", "0@0,1@0,2@0", "--vdev", "net_null0", "--vdev", "net_null1"]
NULL_ARGS = ["--ext", "net_null0,203.0.113.1/24", "--int", "net_null1,198.18.0.1/16", "--conn-capacity", "4096"]


@pytest.mark.parametrize(
    ("eal", "extra", "steering"),
    [
        (NULL_EAL, [], False),  # auto: the null PMD spreads nothing by a fanout
        (NULL_EAL, ["--steer-clients", "on"], True),
        (["--lcores", "0@0,1@0", *NULL_EAL[2:]], ["--steer-clients", "on"], False),  # one worker owns all
    ],
    ids=["auto-null", "on", "on-one-worker"],
)
def test_client_steering_setting(tmp_path: Path, eal: list[str], extra: list[str], steering: bool) -> None:
    with vgw_fwd(tmp_path, eal, [*NULL_ARGS, *extra]) as f:
        assert stats(f.socket)["steer_clients"] is steering
        assert f"steer-clients={'on' if steering else 'off'}" in f.log.read_text()
    with (
        pytest.raises(RuntimeError, match=r"exited with 2(.|\n)*bad option --steer-clients"),
        vgw_fwd(tmp_path, eal, [*NULL_ARGS, "--steer-clients", "sometimes"]),
    ):
        pass


@needs_lab
def test_client_steering_is_on_by_itself_with_af_packet(lab: Topology) -> None:
    """af_packet's fanout may move a flow to another queue mid-connection (rollover): the
    forwarder steers client flows to their owner itself, unless told not to."""
    try:
        for extra, steering in (([], True), (["--steer-clients", "off"], False)):
            fwd = lab.start_forwarder(workers=2, extra=extra)
            assert stats(fwd.socket)["steer_clients"] is steering
            lab.kill_forwarder(signal.SIGTERM)
    finally:
        lab.kill_forwarder()
