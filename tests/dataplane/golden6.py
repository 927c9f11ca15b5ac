"""IPv6 packet builders and independent checks for the golden tests (scapy does the checksums)."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import TCP, UDP, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPerror6,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from .golden import eth, toa_of

CLIENT6 = "2001:db8:c::5"
VIP6 = "2001:db8::10"
LIP6 = "2001:db8:ff::1"
RS6_1 = "2001:db8:1::1"
RS6_2 = "2001:db8:1::2"

CONFIG6 = f"""
vgw-config 1
generation {{gen}}
service web6 tcp {VIP6} 80 maglev toa=on
lip web6 {LIP6}
backend web6 {RS6_1} 8080 1 active
backend web6 {RS6_2} 8080 1 active
service plain6 tcp {VIP6} 81 wrr{{plain_opts}}
lip plain6 {LIP6}
backend plain6 {RS6_1} 8081 1 active
service dns6 udp {VIP6} 53 wlc
lip dns6 {LIP6}
backend dns6 {RS6_1} 5353 1 active
"""


_CHECKSUM_FIELDS = (
    (TCP, "chksum"),
    (UDP, "chksum"),
    (TCPerror, "chksum"),
    (UDPerror, "chksum"),
    (ICMPv6DestUnreach, "cksum"),
    (ICMPv6PacketTooBig, "cksum"),
    (ICMPv6EchoRequest, "cksum"),
)


def config6(gen: int = 1, plain_opts: str = "", extra: str = "") -> str:
    return CONFIG6.format(gen=gen, plain_opts=plain_opts) + extra + "\nend\n"


def client6_tcp(
    flags: str,
    seq: int = 1000,
    ack: int = 0,
    sport: int = 40000,
    dport: int = 80,
    payload: bytes = b"",
    options: list[Any] | None = None,
    hlim: int = 64,
    src: str = CLIENT6,
    ext: Packet | None = None,
) -> Packet:
    ip = IPv6(src=src, dst=VIP6, hlim=hlim)
    if ext is not None:
        ip = ip / ext
    pkt = ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535, options=options or [])
    if payload:
        pkt = pkt / Raw(payload)
    return eth(pkt)


def rs6_tcp(
    rs: str, rport: int, lport: int, flags: str, seq: int = 5000, ack: int = 0, options: list[Any] | None = None
) -> Packet:
    return eth(
        IPv6(src=rs, dst=LIP6, hlim=64)
        / TCP(sport=rport, dport=lport, flags=flags, seq=seq, ack=ack, window=28960, options=options or [])
    )


def recomputed6(pkt: Packet) -> Packet:
    """The same packet with every checksum and length (outer and quoted) recomputed by scapy."""
    clone = pkt.copy()
    for layer, field in _CHECKSUM_FIELDS:
        if clone.haslayer(layer):
            delattr(clone[layer], field)
    del clone[IPv6].plen
    return Ether(bytes(clone))


def assert_checksums6(pkt: Packet) -> None:
    """Every checksum and the payload length in pkt equal an independent (scapy) recomputation."""
    fixed = recomputed6(pkt)
    assert pkt[IPv6].plen == fixed[IPv6].plen, "IPv6 payload length"
    if pkt.haslayer(TCP) and not pkt.haslayer(IPerror6):
        assert pkt[TCP].chksum == fixed[TCP].chksum, "TCP checksum"
    if pkt.haslayer(UDP) and not pkt.haslayer(IPerror6):
        assert pkt[UDP].chksum == fixed[UDP].chksum, "UDP checksum"
    for icmp in (ICMPv6DestUnreach, ICMPv6PacketTooBig):
        if pkt.haslayer(icmp):
            assert pkt[icmp].cksum == fixed[icmp].cksum, "ICMPv6 checksum"
    if pkt.haslayer(TCPerror):
        assert pkt[TCPerror].chksum == fixed[TCPerror].chksum, "quoted TCP checksum"


def toa6_of(pkt: Packet) -> tuple[int, str] | None:
    """(port, address) of the IPv6 TOA option (kind 254, length 20)."""
    return toa_of(pkt, length=20)
