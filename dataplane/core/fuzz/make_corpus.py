"""Regenerates the seed corpora in corpus/ (run with the repo's venv: needs scapy).

The committed files are what `make -C dataplane test` fuzzes from; rerun this only when the
formats change. Packet seeds are bursts: each frame prefixed by its 2-byte big-endian length.
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

HERE = Path(__file__).resolve().parent
CLIENT, VIP, LIP = "203.0.113.5", "192.0.2.10", "198.18.0.1"


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
    return {
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
    return {"protect.txt": change.encode(), "protect_udp.txt": udp.encode()}


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
