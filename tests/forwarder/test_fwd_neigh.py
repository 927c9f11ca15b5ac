"""vgw-fwd's neighbour table under pressure, through DPDK's net_pcap (no namespaces needed).

A capture replayed once into a single-arm forwarder asks for the forwarder's address from 1,100
different senders of its subnet (more than the table's 1,024 entries), from a sender outside the
subnet and from one that claims the forwarder's own address. The table must hold exactly 1,024
entries, having replaced the oldest 76; the off-subnet sender and the impostor are answered (or
not) but never learned; with short timers, every entry nobody uses goes invalid and is removed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.forwarder.fwdproc import until, vgw_fwd
from tests.forwarder.topology import FWD_BIN
from vgw.fwdctl import FwdClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not FWD_BIN.exists(), reason="needs root and vgw-fwd")

FWD_IP = "198.18.0.1"
SENDERS = 1100
TABLE = 1024
OFF_SUBNET = "203.0.113.77"


def sender(i: int) -> tuple[str, str]:
    return f"198.18.{4 + i // 250}.{1 + i % 250}", f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


async def query(sock: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    c = FwdClient(str(sock), timeout_s=10)
    try:
        return await c.neighbours(), (await c.stats())["counters"]
    finally:
        await c.close()


def test_full_table_replaces_and_unused_entries_expire(tmp_path: Path) -> None:
    from scapy.all import ARP, Ether, rdpcap, wrpcap

    frames = [  # first, so its answer finds room in the control TX ring
        Ether(src="02:00:00:00:ee:01", dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc="02:00:00:00:ee:01", psrc=OFF_SUBNET, pdst=FWD_IP)
    ]
    frames += [
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=FWD_IP)
        for ip, mac in (sender(i) for i in range(SENDERS))
    ]
    frames.append(  # an impostor claiming the forwarder's own address
        Ether(src="02:00:00:00:ee:02", dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=2, hwsrc="02:00:00:00:ee:02", psrc=FWD_IP, pdst=FWD_IP)
    )
    rx, tx = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(rx), frames)
    eal = ["--lcores", "0@0,1@0", "--vdev", f"net_pcap0,rx_pcap={rx},tx_pcap={tx}"]
    args = ["--single-arm", "--ext", f"net_pcap0,{FWD_IP}/16", "--conn-capacity", "4096",
            "--neigh-refresh-s", "1", "--neigh-stale-s", "2", "--neigh-expire-s", "1"]  # fmt: skip
    with vgw_fwd(tmp_path, eal, args) as fwd:
        sock = fwd.socket
        # every request seen: 1,100 learned into 1,024 slots, the oldest 76 replaced
        neigh, counters = until(
            lambda: asyncio.run(query(sock)), lambda r: r[1]["ctl_arp_rx"] >= SENDERS + 2, "ARP processed"
        )
        ips = {e["ip"] for e in neigh}
        assert len(neigh) == TABLE, len(neigh)
        assert counters["ctl_neigh_evicted"] == SENDERS - TABLE
        assert ips == {sender(i)[0] for i in range(SENDERS - TABLE, SENDERS)}
        assert OFF_SUBNET not in ips and FWD_IP not in ips
        assert all(e["valid"] for e in neigh)
        # nobody uses them: invalid after 2 s without an answer, removed 1 s later
        until(lambda: asyncio.run(query(sock)), lambda r: not r[0], "unused entries removed", timeout_s=20)
        _, counters = asyncio.run(query(sock))
        assert counters["ctl_neigh_evicted"] == SENDERS
    assert fwd.proc.returncode == 0, fwd.log.read_text()  # SIGTERM: a clean stop flushes the capture

    out = rdpcap(str(tx))
    replies = {a[ARP].pdst for a in out if ARP in a and a[ARP].op == 2}
    # every request for our address is answered, the off-subnet one too (hosts ARP from a
    # packet's source address, which may be off-subnet), unless the control TX ring was full
    # (1,101 answers at once on one CPU): then the frame is counted, not lost silently
    assert OFF_SUBNET in replies
    assert replies <= {OFF_SUBNET, *(sender(i)[0] for i in range(SENDERS))}
    assert len(replies) + counters["ctl_drop_ctl_tx_full"] >= SENDERS + 1
