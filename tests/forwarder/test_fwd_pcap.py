"""vgw-fwd packet in, packet out, through DPDK's net_pcap (GitHub GLB's style of test).

A capture of client packets is replayed once into a single-arm forwarder whose TX is written to
another capture; scapy checks every output frame: the FULLNAT rewrite with TOA, the L2 rewrite from
the (static) neighbour table, the ARP reply for the VIP, the ICMP echo reply, and that malformed
input produced nothing. No namespaces needed: this runs wherever DPDK runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.forwarder.fwdproc import until
from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files
from vgw.fwdctl import FwdClient

VIP, LIP, BACKEND, CLIENT = "192.0.2.10", "198.18.0.100", "198.18.0.11", "203.0.113.7"
BACKEND_MAC, CLIENT_MAC, GW_MAC = "02:00:00:00:01:00", "02:00:00:00:00:07", "02:00:00:00:00:fe"


async def service_active(sock: Path) -> int:
    c = FwdClient(str(sock))
    try:
        return int((await c.stats())["services"]["web"]["conn_active"])
    finally:
        await c.close()


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not FWD_BIN.exists(), reason="needs root and vgw-fwd")


def test_pcap_in_pcap_out(tmp_path: Path) -> None:
    from scapy.all import ARP, ICMP, IP, TCP, Ether, Raw, rdpcap, wrpcap

    inp = [
        # a SYN to the VIP, with the usual options
        Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa")
        / IP(src=CLIENT, dst=VIP, ttl=64)
        / TCP(sport=40001, dport=80, flags="S", seq=1000, options=[("MSS", 1460), ("SAckOK", b"")]),
        # who has the VIP?
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.0.7", pdst=VIP),
        # ping the VIP
        Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa") / IP(src=CLIENT, dst=VIP) / ICMP(id=7, seq=1) / Raw(b"x" * 32),
        # garbage: bad IP checksum to the VIP, a TCP segment without a connection
        Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa") / IP(src=CLIENT, dst=VIP, chksum=0x1234) / TCP(dport=80),
        Ether(src=CLIENT_MAC, dst="02:00:00:00:00:aa")
        / IP(src=CLIENT, dst=VIP)
        / TCP(sport=40002, dport=80, flags="A"),
    ]
    rx, tx = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(rx), inp)
    doc = tmp_path / "state.conf"
    doc.write_text(
        f"vgw-config 1\ngeneration 1\nservice web tcp {VIP} 80 wrr toa=on timeout.tcp_syn_recv=1\nlip web {LIP}\n"
        f"backend web {BACKEND} 80 1 active\nend\n"
    )
    prefix = f"vgwp{secrets.token_hex(4)}"
    log = tmp_path / "fwd.log"
    proc = subprocess.Popen(
        [str(FWD_BIN), "--no-huge", "-m", "128", "--file-prefix", prefix, "--lcores", "0@0,1@0", "--no-pci",
         "--log-level", "*:error", "--vdev", f"net_pcap0,rx_pcap={rx},tx_pcap={tx}", "--",
         "--single-arm", "--ext", "net_pcap0,198.18.0.1/16", "--route", "0.0.0.0/0,198.18.0.254,ext",
         "--neigh", f"{BACKEND},{BACKEND_MAC},ext", "--neigh", f"198.18.0.254,{GW_MAC},ext",
         "--socket", str(tmp_path / "fwd.sock"), "--apply", str(doc), "--conn-capacity", "4096"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "vgw-fwd ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # the pcap is read once at start: the SYN made one connection (SYN_RECV, 1 s timeout
        # here), which the service's gauge shows once the worker publishes its counters; when it
        # expires, the shadow sweep takes it out of the gauge again
        sock = tmp_path / "fwd.sock"
        until(lambda: asyncio.run(service_active(sock)), lambda n: n == 1, "connection in the gauge")
        until(lambda: asyncio.run(service_active(sock)), lambda n: n == 0, "expired connection out of the gauge")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
        cleanup_dpdk_files(prefix)

    out = rdpcap(str(tx))
    fwd_mac = None
    syn = [p for p in out if TCP in p]
    assert len(syn) == 1, [p.summary() for p in out]  # the SYN; nothing from the garbage
    p = syn[0]
    fwd_mac = p[Ether].src
    assert p[Ether].dst == BACKEND_MAC
    assert (p[IP].src, p[IP].dst, p[TCP].dport, p[IP].ttl) == (LIP, BACKEND, 80, 63)
    assert p[TCP].seq == 1000 and p[TCP].flags == "S"
    opts = dict((k, v) for k, v in p[TCP].options if isinstance(k, int | str))
    assert opts.get(254) == bytes.fromhex("9c41") + bytes(map(int, CLIENT.split("."))), p[TCP].options
    # checksums as scapy computes them
    q = p.copy()
    del q[IP].chksum, q[TCP].chksum
    q = Ether(bytes(q))
    assert (q[IP].chksum, q[TCP].chksum) == (p[IP].chksum, p[TCP].chksum)

    arp = [a for a in out if ARP in a and a[ARP].op == 2]
    assert len(arp) == 1 and arp[0][ARP].psrc == VIP and arp[0][ARP].hwsrc == fwd_mac
    assert arp[0][ARP].pdst == "198.18.0.7" and arp[0][Ether].dst == CLIENT_MAC

    echo = [e for e in out if ICMP in e]
    assert len(echo) == 1
    e = echo[0]
    assert (e[IP].src, e[IP].dst, e[ICMP].type, e[ICMP].id, e[ICMP].seq) == (VIP, CLIENT, 0, 7, 1)
    assert e[Ether].dst == CLIENT_MAC and bytes(e[Raw]) == b"x" * 32
    # everything else the forwarder sent is its gratuitous ARP at start
    rest = [x for x in out if not (TCP in x or ICMP in x or (ARP in x and x[ARP].op == 2))]
    assert all(ARP in x and x[ARP].op == 1 and x[ARP].psrc == x[ARP].pdst for x in rest), [x.summary() for x in rest]
