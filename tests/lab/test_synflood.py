"""vgw-synflood, the lab's spoofed-SYN generator (dataplane/tools/vgw-synflood.c): the frames it
builds (through --pcap, checked with scapy), the addresses it refuses, and that it sends, stops by
itself and keeps to a rate cap inside a pair of throw-away namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.all import IP, TCP, Ether, rdpcap

from deploy.lab.flood import FLOOD_BIN
from tests.conftest import REPO

DST_MAC, SRC_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
VIP, PORT = "203.0.113.10", 80
MSS_VALUES = {536, 1220, 1360, 1400, 1440, 1460}


@pytest.fixture(scope="module")
def tool() -> Path:
    """The binary; built here if `make -C dataplane build` has not run (it needs only a C compiler)."""
    r = subprocess.run(["make", "-s", "-C", str(REPO / "dataplane"), "build/vgw-synflood"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and FLOOD_BIN.exists(), r.stderr
    return FLOOD_BIN


def run(tool: Path, *args: str, ns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(tool), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def pcap(tool: Path, tmp_path: Path, *extra: str, count: int = 2000, src_net: str = "198.18.128.0/17") -> list[Any]:
    out = tmp_path / "f.pcap"
    r = run(tool, "--pcap", str(out), "--count", str(count), "--dst", VIP, "--dport", str(PORT),
            "--src-net", src_net, "--dst-mac", DST_MAC, *extra)  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sent"] == count and res["stopped_by"] == "count", res
    return list(rdpcap(str(out)))


def checksums_ok(p: Ether) -> bool:
    fixed = p.copy()
    del fixed[IP].chksum
    del fixed[TCP].chksum
    fixed = Ether(bytes(fixed))
    return bool(fixed[IP].chksum == p[IP].chksum and fixed[TCP].chksum == p[TCP].chksum)


def test_frames_are_valid_spoofed_syns(tool: Path, tmp_path: Path) -> None:
    frames = pcap(tool, tmp_path, "--seed", "7")
    net = ipaddress.ip_network("198.18.128.0/17")
    assert len(frames) == 2000
    for p in frames:
        assert p[Ether].dst == DST_MAC and p[Ether].src == SRC_MAC and p[Ether].type == 0x0800
        ip, tcp = p[IP], p[TCP]
        assert ip.version == 4 and ip.ihl == 5 and ip.ttl == 64 and ip.proto == 6 and ip.flags == "DF"
        assert ip.len == 20 + 40 and len(p) == 14 + 60
        src = ipaddress.ip_address(ip.src)
        assert src in net and src not in (net.network_address, net.broadcast_address), ip.src
        assert ip.dst == VIP and tcp.dport == PORT and tcp.sport >= 1024
        assert tcp.flags == "S" and tcp.ack == 0 and tcp.window == 64240 and tcp.dataofs == 10
        opts = dict(tcp.options)
        assert [o[0] for o in tcp.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
        assert opts["MSS"] in MSS_VALUES and 0 <= opts["WScale"] <= 9 and opts["Timestamp"][1] == 0
        assert checksums_ok(p), p.summary()
    # random sources, ports, ISNs and option values: a flood, not one flow repeated
    assert len({p[IP].src for p in frames}) > 1900
    assert len({p[TCP].sport for p in frames}) > 1900
    assert len({p[TCP].seq for p in frames}) > 1990
    assert len({dict(p[TCP].options)["WScale"] for p in frames}) == 10
    assert {dict(p[TCP].options)["MSS"] for p in frames} == MSS_VALUES


def test_bare_syns_and_small_ranges(tool: Path, tmp_path: Path) -> None:
    frames = pcap(tool, tmp_path, "--no-options", "--src-mac", "02:aa:bb:cc:dd:ee", count=300,
                  src_net="192.0.2.8/30")  # fmt: skip
    assert {p[IP].src for p in frames} == {"192.0.2.9", "192.0.2.10"}  # not .8 (network) nor .11 (broadcast)
    for p in frames:
        assert p[Ether].src == "02:aa:bb:cc:dd:ee" and p[TCP].dataofs == 5 and p[TCP].options == []
        assert p[IP].len == 40 and checksums_ok(p)
    assert {p[IP].src for p in pcap(tool, tmp_path, count=10, src_net="198.51.100.7/32")} == {"198.51.100.7"}


def test_seed_makes_it_reproducible(tool: Path, tmp_path: Path) -> None:
    a = [bytes(p) for p in pcap(tool, tmp_path, "--seed", "42", count=50)]
    b = [bytes(p) for p in pcap(tool, tmp_path, "--seed", "42", count=50)]
    c = [bytes(p) for p in pcap(tool, tmp_path, "--seed", "43", count=50)]
    assert a == b and a != c


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--src-net", "10.0.0.0/8", "--dst", VIP], "--src-net must lie inside"),
        (["--src-net", "198.18.0.0/14", "--dst", VIP], "--src-net must lie inside"),  # wider than 198.18.0.0/15
        (["--src-net", "198.18.128.0/17", "--dst", "8.8.8.8"], "--dst must lie inside"),
        (["--src-net", "203.0.113.0/24", "--dst", VIP], "--dst lies inside --src-net"),
        (["--src-net", "198.18.128.0/17", "--dst", VIP, "--pcap", "/dev/null"], "--pcap needs --count"),
        (["--src-net", "198.18.128.0/17", "--dst", VIP], "--iface or --pcap"),
        (["--src-net", "198.18.128.0/17", "--dst", VIP, "--iface", "lo", "--duration", "7200"], "bad value"),
    ],
)
def test_refuses(tool: Path, args: list[str], why: str) -> None:
    r = run(tool, *args, "--dport", "80", "--dst-mac", DST_MAC)
    assert r.returncode == 2 and why in r.stderr, r.stderr


def test_refuses_the_initial_namespace(tool: Path) -> None:
    if os.stat("/proc/self/ns/net").st_ino != 0xEFFFFFF9:
        pytest.skip("this test does not run in the initial network namespace")
    r = run(tool, "--iface", "lo", "--dst", VIP, "--dport", "80", "--src-net", "198.18.128.0/17",
            "--dst-mac", DST_MAC, "--count", "1")  # fmt: skip
    assert r.returncode == 2 and "initial network namespace" in r.stderr, r.stderr


# -- sending, in two throw-away namespaces joined by a veth -----------------------------------------


@pytest.fixture
def veth() -> Iterator[tuple[str, str, str]]:
    """(sender ns, its interface, receiver ns): the receiver has no address, so its kernel drops
    everything after counting it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tag = f"sft{secrets.token_hex(3)}"
    a, b = f"{tag}-a", f"{tag}-b"
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", f"{tag}x", "netns", a, "type", "veth", "peer", "name", f"{tag}y",
                        "netns", b], check=True)  # fmt: skip
        subprocess.run(["ip", "-n", a, "link", "set", f"{tag}x", "up"], check=True)
        subprocess.run(["ip", "-n", b, "link", "set", f"{tag}y", "up"], check=True)
        yield a, f"{tag}x", b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def rx_packets(ns: str) -> int:
    r = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show"], capture_output=True, text=True, check=True)
    return sum(int(link["stats64"]["rx"]["packets"]) for link in json.loads(r.stdout) if link["ifname"] != "lo")


@pytest.mark.parametrize("mode", ["ring", "mmsg"])
def test_sends_and_stops_by_itself(tool: Path, veth: tuple[str, str, str], mode: str) -> None:
    a, iface, b = veth
    common = ["--iface", iface, "--mode", mode, "--dst", VIP, "--dport", "80", "--src-net", "198.18.128.0/17",
              "--dst-mac", DST_MAC]  # fmt: skip
    before = rx_packets(b)
    r = run(tool, *common, "--count", "5000", ns=a)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sent"] == 5000 and res["errors"] == 0 and res["stopped_by"] == "count", res
    assert rx_packets(b) - before >= 5000
    # --duration bounds a run at full speed
    t0 = time.monotonic()
    r = run(tool, *common, "--duration", "0.5", ns=a)
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["stopped_by"] == "duration" and res["sent"] > 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 5
    assert 0.5 <= res["duration_s"] < 1.5
    # --rate caps it
    r = run(tool, *common, "--rate", "2000", "--duration", "1", ns=a)
    res = json.loads(r.stdout)
    assert r.returncode == 0 and 1500 <= res["sent"] <= 2100 and res["pps"] <= 2100, res
