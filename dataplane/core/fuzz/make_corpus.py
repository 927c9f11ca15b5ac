"""Regenerates the seed corpora in corpus/ (run with the repo's venv: needs scapy).

The committed files are what `make -C dataplane test` fuzzes from; rerun this only when the
formats change. Packet seeds are bursts: each frame prefixed by its 2-byte big-endian length.
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

HERE = Path(__file__).resolve().parent
CLIENT, VIP, LIP = "203.0.113.5", "192.0.2.10", "198.18.0.1"
CLIENT6, VIP6, LIP6, RS6 = "2001:db8:c::5", "2001:db8::10", "2001:db8:ff::1", "2001:db8:1::1"


def eth(p):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p


def burst(*frames) -> bytes:
    return b"".join(struct.pack(">H", len(bytes(f))) + bytes(f) for f in frames)


def packets() -> dict[str, bytes]:
    syn = eth(IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460)]))
    ack = eth(IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001))
    data = eth(IP(src=CLIENT, dst=VIP) / TCP(sport=40001, dport=80, flags="PA") / Raw(b"GET / HTTP/1.0\r\n\r\n"))
    fin = eth(IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="FA", seq=1001, ack=5001))
    # Replies to LIP ports of both workers; the fuzzer mutates the port towards the live one.
    replies = [
        eth(IP(src="198.18.1.1", dst=LIP) / TCP(sport=8080, dport=p, flags="SA", options=[("MSS", 1460)]))
        for p in (1024, 30000, 65534)
    ]
    udp = eth(IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"\x12\x34query"))
    udp_reply = eth(IP(src="198.18.1.1", dst=LIP) / UDP(sport=5353, dport=2048) / Raw(b"answer"))
    quoted = IP(src=LIP, dst="198.18.1.1") / TCP(sport=1024, dport=8080, flags="S")
    icmp_a = eth(IP(src="198.18.9.9", dst=LIP) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(quoted)))
    icmp_b = eth(
        IP(src="203.0.113.1", dst=VIP)
        / ICMP(type=3, code=4)
        / Raw(bytes(IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000))[:28])
    )
    vlan = Ether() / Dot1Q(vlan=7) / syn[IP]
    opts = eth(IP(src=CLIENT, dst=VIP, options=[Raw(b"\x01\x01\x01\x00")]) / TCP(sport=40002, dport=80, flags="S"))
    frag = eth(IP(src=CLIENT, dst=VIP, flags="MF") / TCP(sport=40003, dport=80, flags="S"))
    rr = eth(IP(src=CLIENT, dst="192.0.2.11") / TCP(sport=40004, dport=443, flags="S"))
    return {
        "syn": burst(syn),
        "handshake": burst(syn, replies[0], ack, data, fin),
        "replies": burst(*replies),
        "udp": burst(udp, udp_reply),
        "icmp": burst(icmp_a, icmp_b),
        "vlan": burst(vlan),
        "ip_options": burst(opts),
        "fragment": burst(frag),
        "wrr": burst(rr, rr, rr),
        "arp": burst(bytes.fromhex("ffffffffffff020000000001080600010800060400010200000000010a000001000000000000")),
        "runt": burst(b"\x00" * 10),
        **packets6(),
    }


def packets6() -> dict[str, bytes]:
    """The IPv6 seeds: the fuzz harness holds [2001:db8:c::5]:40000 -> [2001:db8::10]:80."""
    syn = eth(IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1440)]))
    ack = eth(IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001))
    data = eth(IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / Raw(b"GET /"))
    replies = [eth(IPv6(src=RS6, dst=LIP6) / TCP(sport=8080, dport=p, flags="SA")) for p in (1024, 30000, 65534)]
    udp = eth(IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=5000, dport=53) / Raw(b"\x12\x34query"))
    udp_reply = eth(IPv6(src=RS6, dst=LIP6) / UDP(sport=5353, dport=2048) / Raw(b"answer"))
    quoted = IPv6(src=LIP6, dst=RS6) / TCP(sport=1024, dport=8080, flags="S")
    ptb = eth(IPv6(src="2001:db8:1::fe", dst=LIP6) / ICMPv6PacketTooBig(mtu=1400) / Raw(bytes(quoted)))
    unreach = eth(
        IPv6(src="2001:db8:c::fe", dst=VIP6)
        / ICMPv6DestUnreach()
        / Raw(bytes(IPv6(src=VIP6, dst=CLIENT6) / TCP(sport=80, dport=40000)))
    )
    echo = eth(IPv6(src=CLIENT6, dst=VIP6) / ICMPv6EchoRequest())
    exts = eth(
        IPv6(src=CLIENT6, dst=VIP6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(type=4, segleft=0, addresses=["2001:db8:9::1"])
        / IPv6ExtHdrDestOpt()
        / TCP(sport=40001, dport=80, flags="S")
    )
    frag = eth(IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrFragment(m=1) / TCP(sport=40002, dport=80, flags="S"))
    return {
        "v6_handshake": burst(syn, replies[0], ack, data),
        "v6_replies": burst(*replies),
        "v6_udp": burst(udp, udp_reply),
        "v6_icmp": burst(ptb, unreach, echo),
        "v6_ext_headers": burst(exts, frag),
    }


def configs() -> dict[str, bytes]:
    full = """vgw-config 1
generation 7
timeout tcp_established 120
timeout udp 60
service web tcp 192.0.2.10 80 maglev table=65537 toa=on timeout.tcp_syn_recv=10
lip web 198.18.0.1
lip web 198.18.0.2
backend web 198.18.1.1 8080 100 active
backend web 198.18.1.2 8080 50 draining
backend web 198.18.1.3 8080 1 disabled
service dns udp 192.0.2.10 53 wlc
lip dns 198.18.0.1
backend dns 198.18.1.1 5353 1 active
service rr tcp 192.0.2.11 443 wrr
lip rr 198.18.0.3
backend rr 198.18.1.4 443 3 active
backend rr 198.18.1.5 443 65535 active
end
"""
    small = (
        "vgw-config 1\ngeneration 1\nservice a tcp 192.0.2.1 80 maglev table=7\n"
        "lip a 198.18.0.1\nbackend a 198.18.1.1 80 1 active\nend\n"
    )
    # Flood protection (syn_proxy, its auto thresholds, the new-connection caps, rst_unknown).
    protect = """vgw-config 1
generation 4
service web tcp 192.0.2.10 80 maglev toa=on syn_proxy=auto syn_proxy_halfopen=500 syn_proxy_syn_rate=2000 \
conn_rate=300 conn_rate_src24=40 rst_unknown=on
lip web 198.18.0.1
backend web 198.18.1.1 8080 100 active
service api tcp 192.0.2.10 443 wrr syn_proxy=on conn_rate=100000000
lip api 198.18.0.1
backend api 198.18.1.2 443 1 active
service dns udp 192.0.2.10 53 wlc syn_proxy=off rst_unknown=off conn_rate=7 conn_rate_src24=1
lip dns 198.18.0.1
backend dns 198.18.1.1 5353 1 active
end
"""
    # IPv6 services beside IPv4 ones: RFC 5952 and non-canonical addresses, the protection options
    # an IPv6 service takes, and the family rules' refusals.
    ipv6 = """vgw-config 1
generation 9
service web tcp 192.0.2.10 80 maglev table=251
lip web 198.18.0.1
backend web 198.18.1.1 8080 100 active
service web6 tcp 2001:db8::10 80 maglev table=251 toa=on conn_rate=300 conn_rate_src24=40 syn_proxy=off
lip web6 2001:db8:1::1
lip web6 2001:DB8:1:0:0:0:0:2
backend web6 2001:db8:2::1 8080 100 active
backend web6 2001:0db8:0002:0000:0000:0000:0000:0002 8080 50 draining
backend web6 2001:db8:2::3 8080 0 disabled
service dns6 udp 2001:db8::10 53 wrr rst_unknown=off
lip dns6 2001:db8:1::1
backend dns6 2001:db8:2::1 5353 3 active
backend dns6 2001:db8:2::2 5353 1 active
service lc6 tcp 2001:db8::11 443 wlc timeout.tcp_established=60
lip lc6 2001:db8:1::3
backend lc6 2001:db8:2::192.0.2.4 443 1 active
end
"""
    return {
        "ipv6.txt": ipv6.encode(),
        "ipv6_nat64.txt": ipv6.replace("backend web6 2001:db8:2::3 8080", "backend web6 198.18.1.3 8080").encode(),
        "ipv6_lip_family.txt": ipv6.replace("lip web6 2001:db8:1::1", "lip web6 198.18.0.1").encode(),
        "ipv6_syn_proxy.txt": ipv6.replace("syn_proxy=off", "syn_proxy=auto").encode(),
        "ipv6_bad_addresses.txt": ipv6.replace("2001:db8:2::1 8080", "fe80::1%eth0 8080")
        .replace("2001:db8::11", "ff02::1")
        .encode(),
        "full.txt": full.encode(),
        "small.txt": small.encode(),
        "empty_services.txt": b"vgw-config 1\ngeneration 2\nend\n",
        "bad_version.txt": b"vgw-config 9\ngeneration 1\nend\n",
        "truncated.txt": full.encode()[:300],
        "protect.txt": protect.encode(),
        "protect_udp_syn_proxy.txt": protect.replace("wlc syn_proxy=off", "wlc syn_proxy=auto").encode(),
        "protect_out_of_range.txt": protect.replace("syn_proxy_halfopen=500", "syn_proxy_halfopen=0").encode(),
    }


def deltas() -> dict[str, bytes]:
    """Delta seeds that use the protection options (the other delta seeds are hand-written)."""
    change = (
        "vgw-delta 1\ngeneration 6\nservice remove web\n"
        "service add web tcp 192.0.2.10 80 maglev table=251 toa=on syn_proxy=auto syn_proxy_halfopen=64 "
        "conn_rate_src24=10 rst_unknown=on\n"
        "lip add web 198.18.0.100\nbackend add web 198.18.1.1 80 100 active\nend\n"
    )
    udp = (
        "vgw-delta 1\ngeneration 6\nservice remove dns\n"
        "service add dns udp 192.0.2.10 53 wrr conn_rate=1000 syn_proxy=on\n"
        "lip add dns 198.18.0.100\nend\n"
    )
    # IPv6: edits of an IPv6 service (on a base that has one) and the family rules.
    base6 = (
        "vgw-config 1\ngeneration 1\nservice web6 tcp 2001:db8::10 80 maglev table=13\n"
        "lip web6 2001:db8:1::1\nlip web6 2001:db8:1::2\nbackend web6 2001:db8:2::1 80 5 active\n"
        "backend web6 2001:db8:2::2 80 5 active\nend\n"
    )
    edit6 = (
        "vgw-delta 1\ngeneration 6\nlip add web6 2001:db8:1::3\nlip remove web6 2001:DB8:1::1\n"
        "backend add web6 2001:db8:2::3 80 1 draining\nbackend weight web6 2001:db8:2::1 80 9\n"
        "backend state web6 2001:db8:2::2 80 disabled\nbackend remove web6 2001:db8:2::3 80\n"
        "service add dns6 udp 2001:db8::10 53 wlc conn_rate_src24=5\nlip add dns6 2001:db8:1::2\n"
        "backend add dns6 2001:db8:2::53 53 1 active\nend\n"
    )
    mixed = (
        "vgw-delta 1\ngeneration 6\nservice add web6 tcp 2001:db8::10 80 wrr\nlip add web6 2001:db8:1::1\n"
        "backend add web6 198.18.1.1 80 1 active\nlip add web 2001:db8:1::2\nend\n"
    )
    return {
        "protect.txt": change.encode(),
        "protect_udp.txt": udp.encode(),
        "ipv6_edit.txt": (base6 + "\n%%\n" + edit6).encode(),
        "ipv6_family.txt": mixed.encode(),
        "ipv6_add.txt": mixed.replace(
            "backend add web6 198.18.1.1 80 1 active\nlip add web 2001:db8:1::2\n",
            "backend add web6 2001:db8:2::1 80 1 active\n",
        ).encode(),
    }


def sync_msgs() -> dict[str, bytes]:
    """Connection-sync messages (sync.h's format). The first byte asks the harness to re-sign the
    rest with its key, so the seeds need no valid MAC."""
    import ipaddress

    def a(x: str) -> bytes:
        return ipaddress.IPv4Address(x).packed

    def rec(proto: int, state: int, flags: int, cport: int, vport: int, rport: int, timeout: int) -> bytes:
        return (
            bytes([4, proto, state, flags])
            + a(CLIENT) + a(VIP) + a("198.51.100.101") + a("198.51.100.21")
            + struct.pack(">HHHHII", cport, vport, 1030, rport, timeout, 0x01020304)
            + struct.pack(">IIHBB", 0, 0, 0, 0, 0)
        )  # fmt: skip

    def msg(*recs: bytes) -> bytes:
        hdr = b"VS" + bytes([1, len(recs)]) + a("198.51.100.11") + struct.pack(">QIHH", 7, 1, 1, 0)
        return hdr + b"".join(recs) + bytes(8)

    est = rec(6, 1, 0x03, 40000, 80, 8080, 90000)
    return {
        "tcp_established": b"\x01" + msg(est),
        "tcp_and_udp": b"\x01" + msg(rec(6, 3, 0, 40001, 80, 8080, 30000), rec(17, 11, 0, 5000, 53, 5353, 300000)),
        "unsigned": b"\x00" + msg(est),
        "proxied": b"\x01" + msg(rec(6, 1, 0x14, 40002, 80, 8080, 90000)),
    }


def main() -> None:
    for name, blob in packets().items():
        out = HERE / "corpus" / "packet" / f"{name}.bin"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
    for name, blob in configs().items():
        out = HERE / "corpus" / "config" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
    for name, blob in deltas().items():
        out = HERE / "corpus" / "delta" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)

    for name, blob in sync_msgs().items():
        out = HERE / "corpus" / "sync" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)


if __name__ == "__main__":
    main()
