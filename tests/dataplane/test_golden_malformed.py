"""Golden packets: every malformed class is dropped, with exactly its own counter."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from .conftest import DATAPLANE, Engine
from .golden import CLIENT, LIP, VIP, client_tcp, config, decode, eth, rs_tcp


def _ip_bytes(**kw: object) -> bytes:
    return bytes(IP(src=CLIENT, dst=VIP, **kw) / TCP(sport=40000, dport=80, flags="S"))


def _frame(l3: bytes) -> bytes:
    return bytes.fromhex("020000000002020000000001" + "0800") + l3


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _syn(**kw: object) -> bytes:
    return bytes(eth(IP(src=CLIENT, dst=VIP, **kw) / TCP(sport=40000, dport=80, flags="S")))


CASES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "runt": ("eth_trunc", lambda: b"\x02\x00\x00\x00\x00\x02\x02\x00"),
    "vlan_cut": ("eth_trunc", lambda: bytes.fromhex("020000000002020000000001810000")),
    "ip_short": ("ip_trunc", lambda: _frame(_ip_bytes()[:12])),
    "ip_v6_in_v4": ("ip_version", lambda: _frame(_patch(_ip_bytes(), 0, b"\x65"))),
    "ip_ihl_4": ("ip_bad_ihl", lambda: _frame(_patch(_ip_bytes(), 0, b"\x44"))),
    "ip_ihl_past_end": ("ip_trunc", lambda: _frame(_patch(_ip_bytes(), 0, b"\x4f")[:40])),
    "ip_len_past_frame": ("ip_bad_len", lambda: _frame(_patch(_ip_bytes(), 2, b"\x05\xdc"))),
    "ip_len_below_ihl": ("ip_bad_len", lambda: _frame(_patch(_ip_bytes(), 2, b"\x00\x10"))),
    "ip_bad_csum": ("ip_bad_csum", lambda: _frame(_patch(_ip_bytes(), 10, b"\xde\xad"))),
    "ip_options_overrun": ("ip_bad_options", lambda: _syn(options=[Raw(b"\x44\x20\x05\x00")])),
    "ip_lsrr": ("ip_src_route", lambda: _syn(options=[Raw(b"\x83\x07\x04\xc6\x12\x00\x01\x00")])),
    "ip_more_fragments": ("ip_frag", lambda: _syn(flags="MF")),
    "ip_frag_offset": ("ip_frag", lambda: bytes(eth(IP(src=CLIENT, dst=VIP, frag=10, proto=6) / Raw(b"x" * 20)))),
    "src_loopback": ("ip_bad_src", lambda: bytes(eth(IP(src="127.0.0.1", dst=VIP) / TCP(dport=80, flags="S")))),
    "src_multicast": ("ip_bad_src", lambda: bytes(eth(IP(src="224.0.0.5", dst=VIP) / TCP(dport=80, flags="S")))),
    "src_zero": ("ip_bad_src", lambda: bytes(eth(IP(src="0.0.0.0", dst=VIP) / TCP(dport=80, flags="S")))),
    "ttl_1": ("ttl_exceeded", lambda: _syn(ttl=1)),
    "tcp_short": ("tcp_trunc", lambda: bytes(eth(IP(src=CLIENT, dst=VIP, proto=6) / Raw(b"\x9c\x40\x00\x50" * 3)))),
    "tcp_doff_4": ("tcp_bad_off", lambda: bytes(client_tcp("S"))[:46] + b"\x40" + bytes(client_tcp("S"))[47:]),
    "tcp_doff_past_end": ("tcp_bad_off", lambda: bytes(client_tcp("S"))[:46] + b"\xf0" + bytes(client_tcp("S"))[47:]),
    "tcp_syn_fin": ("tcp_bad_flags", lambda: bytes(client_tcp("SF"))),
    "tcp_syn_rst": ("tcp_bad_flags", lambda: bytes(client_tcp("SR"))),
    "tcp_null": ("tcp_bad_flags", lambda: bytes(client_tcp(""))),
    "udp_short": ("udp_trunc", lambda: bytes(eth(IP(src=CLIENT, dst=VIP, proto=17) / Raw(b"\x13\x88\x00\x35")))),
    "udp_len_lies": (
        "udp_bad_len",
        lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=53, len=100) / b"q")),
    ),
    "tcp_port_zero": ("l4_bad_port", lambda: bytes(client_tcp("S", sport=0))),
    "udp_port_zero": ("l4_bad_port", lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=0)))),
    "tcp_bad_csum": ("l4_bad_csum", lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / TCP(dport=80, flags="S", chksum=1)))),
    "udp_bad_csum": ("l4_bad_csum", lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / UDP(dport=53, chksum=1) / b"q"))),
    "icmp_short": ("icmp_trunc", lambda: bytes(eth(IP(src=CLIENT, dst=VIP, proto=1) / Raw(b"\x03\x04\x00\x00")))),
    "icmp_bad_csum": ("icmp_bad_csum", lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4, chksum=7)))),
    "icmp_quote_short": (
        "icmp_inner_bad",
        lambda: bytes(eth(IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4) / Raw(_ip_bytes()[:12]))),
    ),
    "icmp_unknown_flow": (
        "icmp_no_conn",
        lambda: bytes(
            eth(IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4) / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=1))
        ),
    ),
    "gre_to_vip": ("proto_unsupported", lambda: bytes(eth(IP(src=CLIENT, dst=VIP, proto=47) / Raw(b"\x00" * 8)))),
    "unserved_port": ("no_service", lambda: bytes(client_tcp("S", dport=9999))),
    "no_backend": ("no_backend", lambda: bytes(client_tcp("S", dport=82))),
    "ack_without_conn": ("tcp_no_conn", lambda: bytes(client_tcp("A", ack=1))),
    "reply_without_conn": (
        "lip_no_conn",
        lambda: bytes(eth(IP(src="198.18.1.1", dst=LIP) / TCP(sport=8080, dport=2000, flags="SA"))),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_dropped_with_reason(engine: Engine, name: str) -> None:
    reason, build = CASES[name]
    engine.apply(config())
    reply = engine.send(build())
    assert reply["action"] == "drop", reply
    assert reply["reason"] == reason
    counters = engine.counters()
    assert counters[f"drop_{reason}"] == 1
    assert counters["drop"] == 1
    others = {k: v for k, v in counters.items() if k.startswith("drop_") and k != f"drop_{reason}" and v}
    assert others == {}
    assert counters["conn_active"] == 0


def test_every_drop_reason_is_covered() -> None:
    """Each drop reason declared in the C header has a golden case (or a dedicated test)."""
    header = (DATAPLANE / "core/include/vgw/counters.h").read_text()
    block = header.split("#define VGW_DROP_REASONS(X)")[1].split("enum vgw_drop_reason")[0]
    declared = set(re.findall(r'X\(\w+, "(\w+)"\)', block))
    assert len(declared) > 25
    covered = {reason for reason, _ in CASES.values()} | {"none", "conn_table_full", "no_lport"}
    # test_golden_synproxy.py has a dedicated test for each of these:
    covered |= {
        "limit_cps",
        "limit_src24",
        "synproxy_bad_cookie",
        "synproxy_wait",
        "synproxy_syn_on_conn",
        "synproxy_no_room",
    }
    # test_golden_v6.py drops each IPv6 extension-header problem:
    covered |= {"ip6_bad_ext"}
    assert declared - covered == set()


def test_conn_table_full(engine: Engine) -> None:
    engine.init(capacity=1)
    engine.apply(config())
    engine.now(1000)
    syn = decode(engine.send(bytes(client_tcp("S", sport=1111))))
    engine.send(bytes(rs_tcp(syn[IP].dst, 8080, syn[TCP].sport, "SA", ack=1001)))
    engine.send(bytes(client_tcp("A", seq=1001, ack=5001, sport=1111)))
    assert engine.conn("tcp", CLIENT, 1111, VIP, 80)["state"] == "tcp_established"
    # Only an established connection holds the table: nothing may be evicted for a new one.
    reply = engine.send(bytes(client_tcp("S", sport=2222)))
    assert (reply["action"], reply["reason"]) == ("drop", "conn_table_full")
    # Once the first connection expires (established: 90 s), its slot is recycled on demand.
    engine.now(1000 + 91_000)
    assert engine.send(bytes(client_tcp("S", sport=2222)))["action"] == "forward"
