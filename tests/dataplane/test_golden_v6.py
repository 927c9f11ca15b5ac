"""Golden packets over IPv6: FULLNAT v6 -> v6 both ways, TOA for v6 clients, extension headers,
ICMPv6 errors and Packet Too Big, hop limit, the per-/64 source limit, dual stack."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP, TCPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import ESP
from scapy.packet import Raw

from .conftest import Engine
from .golden import CONFIG, assert_checksums, client_tcp, decode, eth
from .golden6 import (
    CLIENT6,
    LIP6,
    RS6_1,
    RS6_2,
    VIP6,
    assert_checksums6,
    client6_tcp,
    config6,
    rs6_tcp,
    toa6_of,
)


def _chain(header: type, n: int):
    """n extension headers of one kind, stacked."""
    chain = header()
    for _ in range(n - 1):
        chain = chain / header()
    return chain


def _inbound(reply: dict, rport: int = 8080) -> IPv6:
    assert reply["action"] == "forward", reply
    assert reply["port"] == "int"
    out = decode(reply)
    assert out[IPv6].src == LIP6
    assert out[IPv6].dst in (RS6_1, RS6_2)
    assert reply["nexthop"] == out[IPv6].dst
    assert out[IPv6].hlim == 63
    if out.haslayer(TCP):
        assert out[TCP].dport == rport
    assert_checksums6(out)
    return out


def _outbound(reply: dict, sport: int = 80, cport: int = 40000) -> IPv6:
    assert reply["action"] == "forward", reply
    assert reply["port"] == "ext"
    assert reply["nexthop"] == CLIENT6
    out = decode(reply)
    assert (out[IPv6].src, out[IPv6].dst) == (VIP6, CLIENT6)
    assert out[IPv6].hlim == 63
    l4 = out[TCP] if out.haslayer(TCP) else out[UDP]
    assert (l4.sport, l4.dport) == (sport, cport)
    assert_checksums6(out)
    return out


def test_tcp_both_ways_with_ipv6_toa_and_mss_clamp(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    engine.now(10_000)

    syn = client6_tcp("S", options=[("MSS", 1440), ("SAckOK", b""), ("WScale", 7)])
    out = _inbound(engine.send(bytes(syn)))
    assert out[TCP].flags == "S" and out[TCP].seq == 1000
    assert toa6_of(out) == (40000, CLIENT6), "TOA carries the IPv6 client's port and address"
    assert len(out[IPv6].payload) == len(syn[IPv6].payload) + 20
    rs, lport = out[IPv6].dst, out[TCP].sport
    assert lport >= 1024
    conn = engine.conn("tcp", CLIENT6, 40000, VIP6, 80)
    assert conn["found"] and conn["state"] == "tcp_syn_recv"
    assert (conn["lip"], conn["lport"], conn["rip"]) == (LIP6, lport, rs)

    synack = rs6_tcp(rs, 8080, lport, "SA", seq=5000, ack=1001, options=[("MSS", 1440)])
    out = _outbound(engine.send(bytes(synack)))
    assert (out[TCP].seq, out[TCP].ack) == (5000, 1001)
    assert dict(out[TCP].options)["MSS"] == 1420, "the server's MSS shrinks by the IPv6 TOA size"

    ack = client6_tcp("A", seq=1001, ack=5001, payload=b"GET / HTTP/1.0\r\n\r\n")
    out = _inbound(engine.send(bytes(ack)))
    assert toa6_of(out) == (40000, CLIENT6), "the first data segment carries TOA too"
    assert bytes(out[TCP].payload) == b"GET / HTTP/1.0\r\n\r\n"
    assert engine.conn("tcp", CLIENT6, 40000, VIP6, 80)["state"] == "tcp_established"

    more = client6_tcp("PA", seq=1019, ack=5101, payload=b"x" * 100)
    out = _inbound(engine.send(bytes(more)))
    assert toa6_of(out) is None, "only segments acking the server's first byte carry TOA"
    assert bytes(out[TCP].payload) == b"x" * 100

    fin = rs6_tcp(rs, 8080, lport, "FA", seq=5001, ack=1119)
    _outbound(engine.send(bytes(fin)))
    counters = engine.counters()
    assert counters["fwd_inbound"] == 3 and counters["fwd_outbound"] == 2
    assert counters["toa_added"] == 2 and counters["mss_clamped"] == 1
    assert counters["conn_new"] == 1


def test_udp_both_ways_and_a_zero_checksum_is_refused(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    engine.now(10_000)
    q = eth(IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=5000, dport=53) / Raw(b"query"))
    out = _inbound(engine.send(bytes(q)))
    assert out[UDP].dport == 5353 and bytes(out[UDP].payload) == b"query"
    a = eth(IPv6(src=RS6_1, dst=LIP6) / UDP(sport=5353, dport=out[UDP].sport) / Raw(b"answer"))
    back = _outbound(engine.send(bytes(a)), sport=53, cport=5000)
    assert bytes(back[UDP].payload) == b"answer"

    zero = eth(IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=5001, dport=53, chksum=0) / Raw(b"query"))
    r = engine.send(bytes(zero))
    assert r == {**r, "action": "drop", "reason": "l4_bad_csum"}, "RFC 8200: a UDP checksum is mandatory"


@pytest.mark.parametrize(
    "ext",
    [
        IPv6ExtHdrHopByHop(),
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt(),
        IPv6ExtHdrRouting(type=4, segleft=0, addresses=["2001:db8:9::1"]),
    ],
    ids=["hop-by-hop", "destination-options", "three-headers", "routing-done"],
)
def test_extension_headers_are_skipped_and_kept(engine: Engine, ext) -> None:
    engine.init()
    engine.apply(config6())
    syn = client6_tcp("S", ext=ext)
    out = _inbound(engine.send(bytes(syn)))
    assert toa6_of(out) == (40000, CLIENT6)
    assert out[IPv6].nh == syn[IPv6].nh, "the extension headers travel on unchanged"


@pytest.mark.parametrize(
    ("ext", "reason"),
    [
        (IPv6ExtHdrRouting(type=4, segleft=1, addresses=["2001:db8:9::1"]), "ip_src_route"),
        (IPv6ExtHdrFragment(offset=0, m=1, id=7), "ip_frag"),
        (IPv6ExtHdrFragment(offset=0, m=0, id=7), "ip_frag"),
        (IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop(), "ip6_bad_ext"),
        (_chain(IPv6ExtHdrDestOpt, 9), "ip6_bad_ext"),
    ],
    ids=["routing-with-segments-left", "fragment", "atomic-fragment", "hop-by-hop-not-first", "nine-headers"],
)
def test_unsafe_extension_headers_are_dropped_and_counted(engine: Engine, ext, reason: str) -> None:
    engine.init()
    engine.apply(config6())
    r = engine.send(bytes(client6_tcp("S", ext=ext)))
    assert r["action"] == "drop" and r["reason"] == reason, r
    assert engine.counters()[f"drop_{reason}"] == 1
    assert engine.counters()["conn_new"] == 0


def test_malformed_ipv6_is_dropped_with_its_reason(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    syn = bytes(client6_tcp("S"))
    cases = {
        "truncated header": (syn[: 14 + 30], "ip_trunc"),
        "payload length beyond the frame": (syn[:18] + (999).to_bytes(2, "big") + syn[20:], "ip_bad_len"),
        "version 4 in an IPv6 frame": (syn[:14] + bytes([0x40 | (syn[14] & 0x0F)]) + syn[15:], "ip_version"),
        "extension header runs past the packet": (
            bytes(eth(IPv6(src=CLIENT6, dst=VIP6, nh=60, plen=8) / Raw(bytes([6, 4]) + b"\0" * 6))),
            "ip6_bad_ext",
        ),
        "ESP": (bytes(eth(IPv6(src=CLIENT6, dst=VIP6) / ESP(spi=1, seq=1))), "proto_unsupported"),
        "link-local source": (bytes(client6_tcp("S", src="fe80::1")), "ip_bad_src"),
        "v4-mapped source": (bytes(client6_tcp("S", src="::ffff:198.51.100.1")), "ip_bad_src"),
        "multicast source": (bytes(client6_tcp("S", src="ff0e::1")), "ip_bad_src"),
        "hop limit 1": (bytes(client6_tcp("S", hlim=1)), "ttl_exceeded"),
        "bad TCP checksum": (syn[:-1] + bytes([syn[-1] ^ 0xFF]), "l4_bad_csum"),
    }
    for name, (frame, reason) in cases.items():
        r = engine.send(frame)
        assert r["action"] == "drop" and r["reason"] == reason, (name, r)
    assert engine.counters()["conn_new"] == 0


def test_node_traffic_echo_and_neighbour_discovery_go_to_the_local_stack(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    other = bytes(eth(IPv6(src=CLIENT6, dst="2001:db8:aa::1") / TCP(dport=22, flags="S")))
    echo = bytes(eth(IPv6(src=CLIENT6, dst=VIP6) / ICMPv6EchoRequest()))
    ns = bytes(eth(IPv6(src=CLIENT6, dst=VIP6, hlim=255) / ICMPv6ND_NS(tgt=VIP6)))
    for frame in (other, echo, ns):
        assert engine.send(frame)["action"] == "local"


def _open_v6(engine: Engine) -> tuple[str, int]:
    out = decode(engine.send(bytes(client6_tcp("S"))))
    return out[IPv6].dst, out[TCP].sport


def test_packet_too_big_from_the_server_side_reaches_the_client_smaller_by_toa(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    rs, lport = _open_v6(engine)
    quoted = IPv6(src=LIP6, dst=rs, hlim=63) / TCP(sport=lport, dport=8080, flags="A", seq=1001, ack=5001)
    ptb = eth(IPv6(src="2001:db8:1::fe", dst=LIP6) / ICMPv6PacketTooBig(mtu=1400) / bytes(quoted))
    r = engine.send(bytes(ptb))
    assert r["action"] == "forward" and r["port"] == "ext" and r["nexthop"] == CLIENT6, r
    out = decode(r)
    assert (out[IPv6].src, out[IPv6].dst) == (VIP6, CLIENT6)
    assert out[ICMPv6PacketTooBig].mtu == 1380, "the client's segments grow by the 20-byte TOA"
    inner = out[IPerror6]
    assert (inner.src, inner.dst) == (CLIENT6, VIP6)
    assert (out[TCPerror].sport, out[TCPerror].dport) == (40000, 80)
    assert_checksums6(out)
    assert engine.counters()["icmp_xlate_out"] == 1


def test_an_icmpv6_quote_with_extension_headers_is_translated(engine: Engine) -> None:
    """What we send keeps the client's extension headers, so an error about it quotes them: the
    quoted TCP header is found past them, and they travel on unchanged."""
    engine.init()
    engine.apply(config6())
    out = decode(engine.send(bytes(client6_tcp("S", ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()))))
    rs, lport = out[IPv6].dst, out[TCP].sport
    quoted = bytes(out[IPv6])  # the packet as the server side saw it, extension headers included
    r = engine.send(bytes(eth(IPv6(src="2001:db8:1::fe", dst=LIP6) / ICMPv6PacketTooBig(mtu=1400) / quoted)))
    assert r["action"] == "forward" and r["nexthop"] == CLIENT6, r
    back = decode(r)
    assert (back[IPerror6].src, back[IPerror6].dst) == (CLIENT6, VIP6)
    assert back[IPerror6].nh == 0, "the quoted hop-by-hop header is kept"
    assert (back[TCPerror].sport, back[TCPerror].dport) == (40000, 80)
    assert back[ICMPv6PacketTooBig].mtu == 1380
    assert_checksums6(back)

    too_many = IPv6(src=LIP6, dst=rs) / _chain(IPv6ExtHdrDestOpt, 9) / TCP(sport=lport, dport=8080)
    r = engine.send(bytes(eth(IPv6(src="2001:db8:1::fe", dst=LIP6) / ICMPv6PacketTooBig(mtu=1400) / bytes(too_many))))
    assert r["action"] == "drop" and r["reason"] == "icmp_inner_bad", r


def test_destination_unreachable_from_the_client_side_reaches_the_server(engine: Engine) -> None:
    engine.init()
    engine.apply(config6())
    rs, lport = _open_v6(engine)
    quoted = IPv6(src=VIP6, dst=CLIENT6, hlim=63) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001)
    unreach = eth(IPv6(src="2001:db8:c::fe", dst=VIP6) / ICMPv6DestUnreach(code=3) / bytes(quoted))
    r = engine.send(bytes(unreach))
    assert r["action"] == "forward" and r["port"] == "int" and r["nexthop"] == rs, r
    out = decode(r)
    assert (out[IPv6].src, out[IPv6].dst) == (LIP6, rs)
    assert (out[IPerror6].src, out[IPerror6].dst) == (rs, LIP6)
    assert (out[TCPerror].sport, out[TCPerror].dport) == (8080, lport)
    assert_checksums6(out)

    unknown = IPv6(src=VIP6, dst=CLIENT6) / TCP(sport=80, dport=40999, flags="SA")
    r = engine.send(bytes(eth(IPv6(src="2001:db8:c::fe", dst=VIP6) / ICMPv6DestUnreach() / bytes(unknown))))
    assert r["action"] == "drop" and r["reason"] == "icmp_no_conn"


def test_replies_to_a_v6_lip_are_handed_to_the_port_owner(engine: Engine) -> None:
    engine.init(nworkers=2)
    engine.apply(config6())
    out = decode(engine.send(bytes(client6_tcp("S")), worker=0))
    rs, lport = out[IPv6].dst, out[TCP].sport
    assert lport % 2 == 0, "worker 0 hands out even ports"
    r = engine.send(bytes(rs6_tcp(rs, 8080, lport, "SA", ack=1001)), worker=1)
    assert r["action"] == "handoff" and r["worker"] == 0
    _outbound(engine.send(bytes(rs6_tcp(rs, 8080, lport, "SA", ack=1001)), worker=0))


def test_the_per_source_limit_applies_per_client_64(engine: Engine) -> None:
    engine.init()
    engine.apply(config6(plain_opts=" conn_rate_src24=2"))
    engine.now(50_000)
    same64 = ["2001:db8:c::1", "2001:db8:c::2", "2001:db8:c:0:ffff::3"]
    verdicts = [engine.send(bytes(client6_tcp("S", src=s, dport=81)))["action"] for s in same64]
    assert verdicts == ["forward", "forward", "drop"], "three clients of one /64 share its budget of 2"
    other64 = engine.send(bytes(client6_tcp("S", src="2001:db8:c:1::1", dport=81)))
    assert other64["action"] == "forward", "another /64 has its own budget"
    assert engine.svc("tcp", VIP6, 81)["drop_limit_src24"] == 1


def test_ipv4_and_ipv6_services_side_by_side(engine: Engine) -> None:
    engine.init()
    v4 = CONFIG.format(gen=1, rs1="active", rs2="active")
    v6 = config6().split("\n", 3)[3]  # the services of the IPv6 document, without its header
    engine.apply(v4 + v6)
    out4 = decode(engine.send(bytes(client_tcp("S"))))
    assert out4.haslayer(IP) and out4[IP].dst.startswith("198.18.1.")
    assert_checksums(out4)
    _inbound(engine.send(bytes(client6_tcp("S"))))
    assert engine.counters()["conn_new"] == 2


def test_a_connection_keeps_its_lip_after_a_change_took_it_away(engine: Engine) -> None:
    """An IPv6 record names its VIP and LIP by id in the node's address table: after an apply
    that replaced the service's LIP, the connection still translates both ways through the old
    one, and new connections take the new one."""
    engine.init()
    engine.apply(config6())
    engine.now(10_000)
    out = _inbound(engine.send(bytes(client6_tcp("S"))))
    rs, lport = out[IPv6].dst, out[TCP].sport
    new_lip = "2001:db8:ff::2"
    engine.apply(config6(gen=2).replace(f"lip web6 {LIP6}\n", f"lip web6 {new_lip}\n", 1))
    _outbound(engine.send(bytes(rs6_tcp(rs, 8080, lport, "SA", ack=1001))))
    _inbound(engine.send(bytes(client6_tcp("A", seq=1001, ack=5001))))  # from the old LIP
    fresh = decode(engine.send(bytes(client6_tcp("S", sport=40001))))
    assert fresh[IPv6].src == new_lip
    assert_checksums6(fresh)
