"""Golden packets: UDP both ways, ICMP errors translated both ways (outer and quoted headers)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from .conftest import Engine
from .golden import CLIENT, LIP, ROUTER, RS1, VIP, assert_checksums, client_tcp, config, decode, eth, rs_tcp


def _quoted_ok(quoted: bytes, src: str, dst: str, sport: int, dport: int) -> IP:
    """Parse the quoted packet and check it independently: addresses, ports, both checksums."""
    inner = IP(quoted)
    assert (inner.src, inner.dst) == (src, dst)
    assert (inner[TCP].sport, inner[TCP].dport) == (sport, dport)
    fixed = inner.copy()
    del fixed.chksum
    del fixed[TCP].chksum
    fixed = IP(bytes(fixed))
    assert inner.chksum == fixed.chksum, "quoted IPv4 checksum"
    assert inner[TCP].chksum == fixed[TCP].chksum, "quoted TCP checksum"
    return inner


def test_udp_both_ways(engine: Engine) -> None:
    engine.apply(config())
    q = eth(IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"\x12\x34query"))
    reply = engine.send(bytes(q))
    assert reply["action"] == "forward" and reply["port"] == "int" and reply["nexthop"] == RS1
    out = decode(reply)
    assert (out[IP].src, out[IP].dst, out[UDP].dport) == (LIP, RS1, 5353)
    assert bytes(out[Raw]) == b"\x12\x34query"
    assert_checksums(out)
    lport = out[UDP].sport
    conn = engine.conn("udp", CLIENT, 5000, VIP, 53)
    assert conn["state"] == "udp" and 299_000 <= conn["expires_in_ms"] <= 300_000

    r = eth(IP(src=RS1, dst=LIP) / UDP(sport=5353, dport=lport) / Raw(b"\x12\x34answer"))
    reply = engine.send(bytes(r))
    assert reply["action"] == "forward" and reply["port"] == "ext" and reply["nexthop"] == CLIENT
    out = decode(reply)
    assert (out[IP].src, out[IP].dst, out[UDP].sport, out[UDP].dport) == (VIP, CLIENT, 53, 5000)
    assert bytes(out[Raw]) == b"\x12\x34answer"
    assert_checksums(out)


def test_udp_zero_checksum_stays_zero(engine: Engine) -> None:
    engine.apply(config())
    q = eth(IP(src=CLIENT, dst=VIP) / UDP(sport=5001, dport=53, chksum=0) / Raw(b"abc"))
    out = decode(engine.send(bytes(q)))
    assert out[UDP].chksum == 0
    assert_checksums(out)


def test_icmp_frag_needed_from_server_side_goes_to_client(engine: Engine) -> None:
    engine.apply(config())
    syn_out = decode(engine.send(bytes(client_tcp("S", options=[("MSS", 1460)]))))
    quoted = bytes(syn_out[IP])  # what we sent to the server, TOA included
    err = eth(IP(src=ROUTER, dst=LIP, ttl=64) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quoted))
    reply = engine.send(bytes(err))
    assert reply["action"] == "forward", reply
    assert reply["port"] == "ext" and reply["nexthop"] == CLIENT
    out = decode(reply)
    assert (out[IP].src, out[IP].dst, out[IP].ttl) == (VIP, CLIENT, 63)
    assert (out[ICMP].type, out[ICMP].code) == (3, 4)
    assert out[ICMP].nexthopmtu == 1392, "client path shrinks by the TOA it will carry"
    assert_checksums(out)
    _quoted_ok(bytes(out[ICMP].payload), CLIENT, VIP, 40000, 80)
    assert engine.counters()["icmp_xlate_out"] == 1


def test_icmp_frag_needed_from_client_side_goes_to_server(engine: Engine) -> None:
    engine.apply(config())
    syn_out = decode(engine.send(bytes(client_tcp("S"))))
    rs, lport = syn_out[IP].dst, syn_out[TCP].sport
    synack = decode(engine.send(bytes(rs_tcp(rs, 8080, lport, "SA", ack=1001, options=[("MSS", 1460)]))))
    quoted = bytes(synack[IP])[:28]  # RFC 792 minimum: IP header + 8 bytes
    err = eth(IP(src="203.0.113.1", dst=VIP, ttl=64) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted))
    reply = engine.send(bytes(err))
    assert reply["action"] == "forward", reply
    assert reply["port"] == "int" and reply["nexthop"] == rs
    out = decode(reply)
    assert (out[IP].src, out[IP].dst) == (LIP, rs)
    assert out[ICMP].nexthopmtu == 1280
    assert_checksums(out)
    inner = IP(bytes(out[ICMP].payload))
    assert (inner.src, inner.dst) == (rs, LIP)
    inner_ports = bytes(out[ICMP].payload)[20:24]
    assert inner_ports == (8080).to_bytes(2, "big") + lport.to_bytes(2, "big")
    fixed = inner.copy()
    del fixed.chksum
    assert IP(bytes(fixed)).chksum == inner.chksum
    assert engine.counters()["icmp_xlate_in"] == 1


def test_icmp_time_exceeded_with_full_quote_tcp_checksum(engine: Engine) -> None:
    engine.apply(config())
    syn_out = decode(engine.send(bytes(client_tcp("S", dport=81, payload=b"hello"))))
    quoted = bytes(syn_out[IP])
    err = eth(IP(src=ROUTER, dst=LIP) / ICMP(type=11, code=0) / Raw(quoted))
    out = decode(engine.send(bytes(err)))
    assert (out[IP].src, out[IP].dst) == (VIP, CLIENT)
    assert_checksums(out)
    inner = _quoted_ok(bytes(out[ICMP].payload), CLIENT, VIP, 40000, 81)
    assert bytes(inner[Raw]) == b"hello"
