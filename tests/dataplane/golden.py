"""Packet builders and independent checks for the golden tests (scapy does the checksums)."""

from __future__ import annotations

import ipaddress
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

CLIENT = "203.0.113.5"
VIP = "192.0.2.10"
LIP = "198.18.0.1"
RS1 = "198.18.1.1"
RS2 = "198.18.1.2"
ROUTER = "198.18.9.9"
MAC_A = "02:00:00:00:00:01"
MAC_B = "02:00:00:00:00:02"

CONFIG = f"""
vgw-config 1
generation {{gen}}
service web tcp {VIP} 80 maglev toa=on
lip web {LIP}
backend web {RS1} 8080 1 {{rs1}}
backend web {RS2} 8080 1 {{rs2}}
service plain tcp {VIP} 81 wrr
lip plain {LIP}
backend plain {RS1} 8081 1 active
service dns udp {VIP} 53 wlc
lip dns {LIP}
backend dns {RS1} 5353 1 active
service empty tcp {VIP} 82 maglev
lip empty {LIP}
backend empty {RS1} 8082 1 disabled
"""


def config(gen: int = 1, rs1: str = "active", rs2: str = "active", extra: str = "") -> str:
    return CONFIG.format(gen=gen, rs1=rs1, rs2=rs2) + extra + "\nend\n"


def eth(payload: Packet) -> Packet:
    return Ether(src=MAC_A, dst=MAC_B) / payload


def client_tcp(
    flags: str,
    seq: int = 1000,
    ack: int = 0,
    sport: int = 40000,
    dport: int = 80,
    payload: bytes = b"",
    options: list[Any] | None = None,
    ttl: int = 64,
) -> Packet:
    pkt = IP(src=CLIENT, dst=VIP, ttl=ttl, id=7) / TCP(
        sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535, options=options or []
    )
    if payload:
        pkt = pkt / Raw(payload)
    return eth(pkt)


def rs_tcp(
    rs: str,
    rport: int,
    lport: int,
    flags: str,
    seq: int = 5000,
    ack: int = 0,
    payload: bytes = b"",
    options: list[Any] | None = None,
) -> Packet:
    pkt = IP(src=rs, dst=LIP, ttl=64, id=9) / TCP(
        sport=rport, dport=lport, flags=flags, seq=seq, ack=ack, window=28960, options=options or []
    )
    if payload:
        pkt = pkt / Raw(payload)
    return eth(pkt)


def decode(reply: dict[str, Any]) -> Packet:
    return Ether(bytes.fromhex(reply["hex"]))


def recomputed(pkt: Packet) -> Packet:
    """The same packet with every checksum (outer and quoted) recomputed by scapy."""
    clone = pkt.copy()
    for layer in (IP, TCP, UDP, ICMP, IPerror, UDPerror):
        if clone.haslayer(layer):
            del clone[layer].chksum
    if clone.haslayer(IP):
        del clone[IP].len
    return Ether(bytes(clone))


def assert_checksums(pkt: Packet) -> None:
    """Every checksum in pkt equals an independent (scapy) recomputation."""
    fixed = recomputed(pkt)
    assert pkt[IP].chksum == fixed[IP].chksum, "IPv4 header checksum"
    if pkt.haslayer(TCP):
        assert pkt[TCP].chksum == fixed[TCP].chksum, "TCP checksum"
    if pkt.haslayer(UDP) and pkt[UDP].chksum != 0:
        assert pkt[UDP].chksum == fixed[UDP].chksum, "UDP checksum"
    if pkt.haslayer(ICMP):
        assert pkt[ICMP].chksum == fixed[ICMP].chksum, "ICMP checksum"
    if pkt.haslayer(IPerror):
        assert pkt[IPerror].chksum == fixed[IPerror].chksum, "quoted IPv4 header checksum"


def toa_of(pkt: Packet, length: int = 8) -> tuple[int, str] | None:
    """(port, address) of the TOA option, parsed by hand from the raw TCP header: length 8 for an
    IPv4 client (2-byte port, 4-byte address), 20 for an IPv6 one (16-byte address)."""
    raw = bytes(pkt[TCP])
    hdr_len = (raw[12] >> 4) * 4
    i = 20
    while i < hdr_len:
        kind = raw[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if kind == 254:
            assert raw[i + 1] == length, f"TOA length must be {length}"
            assert i == 20, "TOA sits right after the fixed TCP header"
            port = int.from_bytes(raw[i + 2 : i + 4], "big")
            return port, str(ipaddress.ip_address(raw[i + 4 : i + length]))
        i += raw[i + 1]
    return None


def mss_of(pkt: Packet) -> int | None:
    for name, value in pkt[TCP].options:
        if name == "MSS":
            return int(value)
    return None
