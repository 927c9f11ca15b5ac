"""Golden packets: TCP through FULLNAT in both directions, TOA, MSS, state, draining."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from .conftest import Engine
from .golden import (
    CLIENT,
    LIP,
    RS1,
    RS2,
    VIP,
    assert_checksums,
    client_tcp,
    config,
    decode,
    eth,
    mss_of,
    rs_tcp,
    toa_of,
)


def _check_inbound(reply: dict, seq: int | None = None, rport: int = 8080):
    assert reply["action"] == "forward", reply
    assert reply["port"] == "int"
    out = decode(reply)
    assert out[IP].src == LIP
    assert out[IP].dst in (RS1, RS2)
    assert reply["nexthop"] == out[IP].dst
    assert out[TCP].dport == rport
    assert out[IP].ttl == 63
    assert out[IP].len == len(bytes(out[IP]))
    if seq is not None:
        assert out[TCP].seq == seq
    assert_checksums(out)
    return out


def _check_outbound(reply: dict, cport: int = 40000):
    assert reply["action"] == "forward", reply
    assert reply["port"] == "ext"
    assert reply["nexthop"] == CLIENT
    out = decode(reply)
    assert (out[IP].src, out[IP].dst) == (VIP, CLIENT)
    assert (out[TCP].sport, out[TCP].dport) == (80, cport)
    assert out[IP].ttl == 63
    assert_checksums(out)
    return out


def test_handshake_data_fin_both_ways_with_toa(engine: Engine) -> None:
    engine.apply(config())
    engine.now(10_000)

    syn = client_tcp("S", seq=1000, options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
    out = _check_inbound(engine.send(bytes(syn)), seq=1000)
    assert out[TCP].flags == "S"
    assert toa_of(out) == (40000, CLIENT), "TOA carries the client's port and address"
    assert mss_of(out) == 1460, "the client's own MSS is not touched"
    assert len(out[IP]) == len(syn[IP]) + 8
    rs, lport = out[IP].dst, out[TCP].sport
    assert lport >= 1024
    conn = engine.conn("tcp", CLIENT, 40000, VIP, 80)
    assert conn["found"] and conn["state"] == "tcp_syn_recv"
    assert (conn["lip"], conn["lport"], conn["rip"]) == (LIP, lport, rs)
    assert 29_000 <= conn["expires_in_ms"] <= 30_000

    synack = rs_tcp(rs, 8080, lport, "SA", seq=5000, ack=1001, options=[("MSS", 1460), ("SAckOK", b"")])
    out = _check_outbound(engine.send(bytes(synack)))
    assert out[TCP].flags == "SA"
    assert (out[TCP].seq, out[TCP].ack) == (5000, 1001), "FULLNAT does not touch sequence numbers"
    assert mss_of(out) == 1452, "server MSS shrinks by the TOA size"
    assert toa_of(out) is None

    ack = client_tcp("A", seq=1001, ack=5001)
    out = _check_inbound(engine.send(bytes(ack)), seq=1001)
    assert toa_of(out) == (40000, CLIENT), "the handshake's last ACK carries TOA (toa module reads it)"
    assert engine.conn("tcp", CLIENT, 40000, VIP, 80)["state"] == "tcp_established"

    data = client_tcp("PA", seq=1001, ack=5001, payload=b"GET / HTTP/1.1\r\n\r\n")
    out = _check_inbound(engine.send(bytes(data)), seq=1001)
    assert toa_of(out) == (40000, CLIENT), "first data before the server spoke carries TOA"
    assert bytes(out[Raw]) == b"GET / HTTP/1.1\r\n\r\n"

    reply = rs_tcp(rs, 8080, lport, "PA", seq=5001, ack=1019, payload=b"HTTP/1.1 200 OK\r\n\r\n")
    out = _check_outbound(engine.send(bytes(reply)))
    assert bytes(out[Raw]) == b"HTTP/1.1 200 OK\r\n\r\n"

    more = client_tcp("A", seq=1019, ack=5020)
    out = _check_inbound(engine.send(bytes(more)), seq=1019)
    assert toa_of(out) is None, "no TOA once the client acknowledged server data"
    assert len(out[IP]) == len(more[IP])

    out = _check_inbound(engine.send(bytes(client_tcp("FA", seq=1019, ack=5020))))
    assert out[TCP].flags == "FA"
    assert engine.conn("tcp", CLIENT, 40000, VIP, 80)["state"] == "tcp_close_wait"
    _check_outbound(engine.send(bytes(rs_tcp(rs, 8080, lport, "FA", seq=5020, ack=1020))))
    assert engine.conn("tcp", CLIENT, 40000, VIP, 80)["state"] == "tcp_time_wait"
    _check_inbound(engine.send(bytes(client_tcp("A", seq=1020, ack=5021))))
    conn = engine.conn("tcp", CLIENT, 40000, VIP, 80)
    assert conn["state"] == "tcp_time_wait"
    assert 6_000 <= conn["expires_in_ms"] <= 7_000

    c = engine.counters()
    assert c["fwd_inbound"] == 6 and c["fwd_outbound"] == 3
    assert c["toa_added"] == 3 and c["mss_clamped"] == 1
    assert c["conn_new"] == 1 and c["drop"] == 0

    # After TIME_WAIT the tuple is gone; a late segment is dropped, a new SYN starts over.
    engine.now(10_000 + 8_000)
    assert engine.conn("tcp", CLIENT, 40000, VIP, 80) == {"found": False}
    late = engine.send(bytes(client_tcp("A", seq=1020, ack=5021)))
    assert late == {**late, "action": "drop", "reason": "tcp_no_conn"}
    _check_inbound(engine.send(bytes(client_tcp("S", seq=9000))), seq=9000)
    assert engine.counters()["conn_new"] == 2


def test_rst_from_server_closes(engine: Engine) -> None:
    engine.apply(config())
    out = _check_inbound(engine.send(bytes(client_tcp("S", sport=40001))))
    rs, lport = out[IP].dst, out[TCP].sport
    out = _check_outbound(engine.send(bytes(rs_tcp(rs, 8080, lport, "RA", seq=0, ack=1001))), cport=40001)
    assert out[TCP].flags == "RA"
    conn = engine.conn("tcp", CLIENT, 40001, VIP, 80)
    assert conn["state"] == "tcp_close"
    assert conn["expires_in_ms"] <= 3_000


def test_rst_from_client(engine: Engine) -> None:
    engine.apply(config())
    out = _check_inbound(engine.send(bytes(client_tcp("S", sport=40002))))
    rs, lport = out[IP].dst, out[TCP].sport
    _check_outbound(engine.send(bytes(rs_tcp(rs, 8080, lport, "SA", ack=1001))), cport=40002)
    # LVS semantics: a client RST during SYN_RECV does not close (it may be spoofed); once
    # established it does.
    _check_inbound(engine.send(bytes(client_tcp("A", seq=1001, ack=5001, sport=40002))))
    out = _check_inbound(engine.send(bytes(client_tcp("R", seq=1001, sport=40002))))
    assert out[TCP].flags == "R"
    assert toa_of(out) is None, "no TOA on RST"
    assert engine.conn("tcp", CLIENT, 40002, VIP, 80)["state"] == "tcp_close"


def test_service_without_toa_leaves_options_alone(engine: Engine) -> None:
    engine.apply(config())
    syn = client_tcp("S", dport=81, options=[("MSS", 1400)])
    out = _check_inbound(engine.send(bytes(syn)), rport=8081)
    assert toa_of(out) is None
    assert bytes(out[TCP])[20:] == bytes(syn[TCP])[20:]
    lport = out[TCP].sport
    synack = rs_tcp(RS1, 8081, lport, "SA", ack=1001, options=[("MSS", 1460)])
    reply = engine.send(bytes(synack))
    assert reply["action"] == "forward"
    out = decode(reply)
    assert out[TCP].sport == 81
    assert mss_of(out) == 1460
    assert_checksums(out)


def test_toa_skipped_without_option_room(engine: Engine) -> None:
    engine.apply(config())
    # 36 bytes of options leave no room for 8 more (TCP options max out at 40).
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)] + [("NOP", None)] * 15
    syn = client_tcp("S", options=opts)
    assert len(bytes(syn[TCP])) == 56
    out = _check_inbound(engine.send(bytes(syn)))
    assert toa_of(out) is None
    assert engine.counters()["toa_no_room"] == 1


def test_toa_skipped_when_mtu_would_be_exceeded(engine: Engine) -> None:
    engine.init(mtu=1500)
    engine.apply(config())
    out = _check_inbound(engine.send(bytes(client_tcp("S"))))
    rs, lport = out[IP].dst, out[TCP].sport
    engine.send(bytes(rs_tcp(rs, 8080, lport, "SA", ack=1001)))
    full = client_tcp("PA", seq=1001, ack=5001, payload=b"x" * 1460)
    assert len(full[IP]) == 1500
    out = _check_inbound(engine.send(bytes(full)))
    assert toa_of(out) is None
    assert len(out[IP]) == 1500
    assert engine.counters()["toa_no_room"] == 1


def test_vlan_tag_preserved(engine: Engine) -> None:
    engine.apply(config())
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=42) / client_tcp("S")[IP]
    reply = engine.send(bytes(frame))
    assert reply["action"] == "forward"
    out = decode(reply)
    assert out[Dot1Q].vlan == 42
    assert out[IP].src == LIP
    assert toa_of(out) == (40000, CLIENT)
    assert_checksums(out)


def test_ethernet_padding_trimmed(engine: Engine) -> None:
    engine.apply(config())
    frame = bytes(client_tcp("S", dport=81)) + b"\x00" * 6
    out = decode(engine.send(frame))
    assert len(bytes(out)) == 14 + 40


def test_draining_backend_keeps_established_and_gets_no_new(engine: Engine) -> None:
    engine.apply(config(gen=1))
    flows: dict[int, str] = {}
    for sport in range(41000, 41040):
        out = _check_inbound(engine.send(bytes(client_tcp("S", sport=sport))))
        flows[sport] = out[IP].dst
    assert set(flows.values()) == {RS1, RS2}, "maglev spreads 40 flows over both backends"

    engine.apply(config(gen=2, rs1="draining"))
    for sport, rs in flows.items():
        out = _check_inbound(engine.send(bytes(client_tcp("A", seq=1001, ack=5001, sport=sport))))
        assert out[IP].dst == rs, "established connections never remap"
    for sport in range(42000, 42020):
        out = _check_inbound(engine.send(bytes(client_tcp("S", sport=sport))))
        assert out[IP].dst == RS2, "draining backends take no new connections"

    engine.apply(config(gen=3, rs1="disabled", rs2="disabled"))
    reply = engine.send(bytes(client_tcp("S", sport=43000)))
    assert (reply["action"], reply["reason"]) == ("drop", "no_backend")
    kept = engine.send(bytes(client_tcp("A", seq=1001, ack=5001, sport=41000)))
    assert kept["action"] == "forward", "disabling leaves existing connections alone"


def test_stale_generation_rejected(engine: Engine) -> None:
    engine.apply(config(gen=5))
    r = engine.config(config(gen=5))
    assert not r["ok"] and "not newer" in r["error"]
    r = engine.config("vgw-config 1\ngeneration 6\nservice x tcp 1.2.3.4 80 maglev\n")
    assert not r["ok"] and "end" in r["error"]


def test_reply_to_other_workers_port_is_handed_off(engine: Engine) -> None:
    engine.init(nworkers=4)
    engine.apply(config())
    out = _check_inbound(engine.send(bytes(client_tcp("S")), worker=2))
    rs, lport = out[IP].dst, out[TCP].sport
    assert lport % 4 == 2, "worker 2 only allocates ports it owns"
    synack = bytes(rs_tcp(rs, 8080, lport, "SA", ack=1001))
    reply = engine.send(synack, worker=1)
    assert reply["action"] == "handoff" and reply["worker"] == 2
    assert bytes.fromhex(reply["hex"]) == synack, "handed-off packets are untouched"
    _check_outbound(engine.send(synack, worker=2))


def test_new_syn_on_time_wait_tuple_reuses(engine: Engine) -> None:
    engine.apply(config())
    out = _check_inbound(engine.send(bytes(client_tcp("S", sport=44000))))
    rs, lport = out[IP].dst, out[TCP].sport
    engine.send(bytes(rs_tcp(rs, 8080, lport, "SA", ack=1001)))
    engine.send(bytes(client_tcp("FA", seq=1001, ack=5001, sport=44000)))
    engine.send(bytes(rs_tcp(rs, 8080, lport, "FA", seq=5001, ack=1002)))
    assert engine.conn("tcp", CLIENT, 44000, VIP, 80)["state"] == "tcp_time_wait"
    _check_inbound(engine.send(bytes(client_tcp("S", seq=77777, sport=44000))), seq=77777)
    assert engine.conn("tcp", CLIENT, 44000, VIP, 80)["state"] == "tcp_syn_recv"
    assert engine.counters()["conn_reused"] == 1


def test_local_traffic_untouched(engine: Engine) -> None:
    engine.apply(config())
    node = eth(IP(src=CLIENT, dst="198.51.100.1") / TCP(sport=179, dport=179, flags="S"))
    arp = bytes.fromhex("ffffffffffff020000000001080600010800060400010200000000010a0000010000000000000a000002")
    ping = eth(IP(src=CLIENT, dst=VIP, proto=1) / b"\x08\x00\xf7\xff\x00\x00\x00\x00")
    for frame in (bytes(node), arp, bytes(ping)):
        reply = engine.send(frame)
        assert reply["action"] == "local"
        assert bytes.fromhex(reply["hex"]) == frame
    assert engine.counters()["local"] == 3


def test_burst_with_syn_and_ack_of_same_flow(engine: Engine) -> None:
    engine.apply(config())
    replies = engine.burst([bytes(client_tcp("S", sport=45000)), bytes(client_tcp("S", sport=45000))])
    assert [r["action"] for r in replies] == ["forward", "forward"]
    assert decode(replies[0])[TCP].sport == decode(replies[1])[TCP].sport, "retransmitted SYN, same conn"
    assert engine.counters()["conn_new"] == 1


def test_client_steering_hands_every_client_packet_to_its_owner(engine: Engine) -> None:
    """VGW_WF_STEER_CLIENTS (vgw-fwd on af_packet): a client flow belongs to one worker wherever
    its packets arrive, ICMP errors about it included."""
    from scapy.layers.inet import ICMP

    engine.init(nworkers=4, worker_flags=0x2)
    engine.apply(config())
    syn = bytes(client_tcp("S", sport=40123))
    replies = [engine.send(syn, worker=w) for w in range(4)]
    handoffs = [r for r in replies if r["action"] == "handoff"]
    owners = {r["worker"] for r in handoffs}
    assert len(handoffs) == 3 and len(owners) == 1, replies
    owner = owners.pop()
    assert replies[owner]["action"] == "forward"
    out = decode(replies[owner])
    other = (owner + 1) % 4
    ack = bytes(client_tcp("A", seq=1001, ack=5001, sport=40123))
    r = engine.send(ack, worker=other)
    assert r["action"] == "handoff" and r["worker"] == owner, r
    # the server's reply comes to the LIP port's owner, which is the same worker
    synack = decode(engine.send(bytes(rs_tcp(out[IP].dst, 8080, out[TCP].sport, "SA", ack=1001)), worker=owner))
    quoted = bytes(synack[IP])[:28]
    err = bytes(eth(IP(src="203.0.113.1", dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted)))
    r = engine.send(err, worker=other)
    assert r["action"] == "handoff" and r["worker"] == owner, r
    assert engine.send(err, worker=owner)["action"] == "forward"
