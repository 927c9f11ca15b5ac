"""Golden packets: the SYN proxy (cookies, the second handshake, sequence/timestamp/SACK/window
translation both ways, held data, resets), mid-flow segments without state, rate caps and
half-open eviction under table pressure."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from .conftest import Engine
from .golden import CLIENT, LIP, RS1, VIP, assert_checksums, client_tcp, decode, eth, rs_tcp, toa_of

PORT = 90
RPORT = 9090
ISN = 1_000_000
RS_ISN = 7_000_000


def doc(options: str = "syn_proxy=on", gen: int = 1, backends: int = 1) -> str:
    lines = [
        "vgw-config 1",
        f"generation {gen}",
        f"service sp tcp {VIP} {PORT} maglev toa=on {options}",
        f"lip sp {LIP}",
    ]
    lines += [f"backend sp 198.18.1.{i + 1} {RPORT} 1 active" for i in range(backends)]
    return "\n".join([*lines, "end", ""])


def opts(pkt: Any) -> dict[str, Any]:
    return {name: value for name, value in pkt[TCP].options}


def csyn(seq: int = ISN, sport: int = 40000, options: list[Any] | None = None) -> bytes:
    o = options if options is not None else [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (111, 0)), ("WScale", 8)]
    return bytes(client_tcp("S", seq=seq, sport=sport, dport=PORT, options=o))


def handshake_with_client(engine: Engine, sport: int = 40000, options: list[Any] | None = None) -> Any:
    """Client SYN -> the proxy's cookie SYN-ACK (decoded, checked)."""
    r = engine.send(csyn(sport=sport, options=options))
    assert r["action"] == "forward" and r["port"] == "ext" and r["nexthop"] == CLIENT, r
    sa = decode(r)
    assert (sa[IP].src, sa[IP].dst, sa[TCP].sport, sa[TCP].dport) == (VIP, CLIENT, PORT, sport)
    assert sa[TCP].flags == "SA"
    assert sa[TCP].ack == ISN + 1
    assert_checksums(sa)
    return sa


def cack(
    cookie: int,
    seq: int = ISN + 1,
    sport: int = 40000,
    ts: tuple[int, int] | None = None,
    payload: bytes = b"",
    flags: str = "A",
    extra: list[Any] | None = None,
    window: int = 502,
) -> bytes:
    o: list[Any] = []
    if ts:
        o.append(("Timestamp", ts))
    o += extra or []
    pkt = client_tcp(flags, seq=seq, ack=cookie + 1, sport=sport, dport=PORT, payload=payload, options=o)
    pkt[TCP].window = window
    return bytes(pkt)


def rs(
    lport: int,
    flags: str,
    seq: int,
    ack: int,
    options: list[Any] | None = None,
    payload: bytes = b"",
    window: int = 28960,
) -> bytes:
    pkt = rs_tcp(RS1, RPORT, lport, flags, seq=seq, ack=ack, payload=payload, options=options)
    pkt[TCP].window = window
    return bytes(pkt)


def proxied(engine: Engine, sport: int = 40000, rs_ws: int | None = 7) -> tuple[int, int, int]:
    """Runs both handshakes with timestamps; returns (cookie, our tsval, lport)."""
    sa = handshake_with_client(engine, sport=sport)
    cookie, our_ts = sa[TCP].seq, opts(sa)["Timestamp"][0]
    r = engine.send(cack(cookie, sport=sport, ts=(112, our_ts)))
    syn = decode(r)
    lport = syn[TCP].sport
    o = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (5000, 112))]
    if rs_ws is not None:
        o.append(("WScale", rs_ws))
    r = engine.send(rs(lport, "SA", RS_ISN, ISN + 1, options=o))
    assert r["action"] == "forward" and r["port"] == "int", r
    return cookie, our_ts, lport


def test_cookie_handshake_then_translation_both_ways(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa = handshake_with_client(engine)
    o = opts(sa)
    assert o["MSS"] == 1452, "our MSS leaves room for TOA"
    assert "SAckOK" in o and o["WScale"] == 7
    our_ts, echoed = o["Timestamp"]
    assert echoed == 111
    assert sa[TCP].window == 1452, "one segment until the server's window is known"
    assert engine.conn("tcp", CLIENT, 40000, VIP, PORT) == {"found": False}, "a cookie SYN-ACK keeps no state"
    c = engine.counters()
    assert (c["syn_cookie_sent"], c["conn_new"], c["conn_active"]) == (1, 0, 0)
    cookie = sa[TCP].seq

    # The client's ACK validates the cookie: the connection opens and its SYN goes to the server.
    r = engine.send(cack(cookie, ts=(112, our_ts)))
    assert r["action"] == "forward" and r["port"] == "int" and r["nexthop"] == RS1, r
    syn = decode(r)
    assert (syn[IP].src, syn[IP].dst, syn[TCP].dport) == (LIP, RS1, RPORT)
    assert syn[TCP].flags == "S" and syn[TCP].seq == ISN and syn[TCP].ack == 0
    so = opts(syn)
    assert so["MSS"] == 1460 and "SAckOK" in so and so["WScale"] == 8, "what the cookie encoded"
    assert so["Timestamp"] == (112, 0)
    assert toa_of(syn) == (40000, CLIENT)
    assert_checksums(syn)
    assert engine.conn("tcp", CLIENT, 40000, VIP, PORT)["state"] == "tcp_syn_sent"
    lport = syn[TCP].sport

    # The server's SYN-ACK becomes our ACK to it, written from the client's numbers.
    r = engine.send(
        rs(
            lport,
            "SA",
            RS_ISN,
            ISN + 1,
            options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (5000, 112)), ("WScale", 7)],
        )
    )
    assert r["action"] == "forward" and r["port"] == "int", r
    ack = decode(r)
    assert ack[TCP].flags == "A"
    assert (ack[TCP].seq, ack[TCP].ack) == (ISN + 1, RS_ISN + 1)
    assert opts(ack)["Timestamp"] == (112, 5000)
    assert ack[TCP].window == 502, "the client's window, same scale on both legs"
    assert_checksums(ack)
    assert engine.conn("tcp", CLIENT, 40000, VIP, PORT)["state"] == "tcp_established"

    # Client data: ACK and TSecr move into the server's numbers, SACK edges too.
    r = engine.send(
        cack(
            cookie,
            ts=(113, our_ts + 5),
            payload=b"GET / HTTP/1.0\r\n\r\n",
            extra=[("NOP", None), ("NOP", None), ("SAck", (cookie + 100, cookie + 200))],
        )
    )
    d = decode(r)
    assert (d[IP].src, d[IP].dst) == (LIP, RS1)
    assert d[TCP].seq == ISN + 1 and d[TCP].ack == RS_ISN + 1
    assert opts(d)["Timestamp"] == (113, 5005)
    assert opts(d)["SAck"] == (RS_ISN + 100, RS_ISN + 200)
    assert bytes(d[Raw]) == b"GET / HTTP/1.0\r\n\r\n"
    assert_checksums(d)

    # Server data: sequence number and TSval move into the client's numbers.
    r = engine.send(
        rs(
            lport,
            "PA",
            RS_ISN + 1,
            ISN + 19,
            options=[("Timestamp", (5001, 113))],
            payload=b"HTTP/1.0 200 OK\r\n\r\n",
            window=1000,
        )
    )
    assert r["port"] == "ext" and r["nexthop"] == CLIENT
    d = decode(r)
    assert (d[IP].src, d[IP].dst, d[TCP].sport, d[TCP].dport) == (VIP, CLIENT, PORT, 40000)
    assert d[TCP].seq == cookie + 1 and d[TCP].ack == ISN + 19
    assert opts(d)["Timestamp"] == (our_ts + 1, 113)
    assert d[TCP].window == 1000
    assert_checksums(d)

    # FIN both ways, through the proxy.
    d = decode(engine.send(cack(cookie + 20, seq=ISN + 19, ts=(114, our_ts + 2), flags="FA")))
    assert d[TCP].flags == "FA" and d[TCP].ack == RS_ISN + 21
    assert_checksums(d)
    d = decode(engine.send(rs(lport, "FA", RS_ISN + 21, ISN + 20, options=[("Timestamp", (5002, 114))])))
    assert d[TCP].flags == "FA" and d[TCP].seq == cookie + 21
    assert_checksums(d)
    d = decode(engine.send(cack(cookie + 21, seq=ISN + 20, ts=(115, our_ts + 3))))
    assert d[TCP].ack == RS_ISN + 22
    assert engine.conn("tcp", CLIENT, 40000, VIP, PORT)["state"] == "tcp_time_wait"
    c = engine.counters()
    assert (c["syn_cookie_ok"], c["syn_cookie_bad"], c["conn_new"], c["conn_halfopen"]) == (1, 0, 1, 0)
    s = engine.svc("tcp", VIP, PORT)
    assert (s["syn_cookie_sent"], s["syn_cookie_ok"], s["syn_proxy_active"]) == (1, 1, 1)


def test_bad_cookies_are_dropped_and_counted(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa = handshake_with_client(engine, options=[("MSS", 1460)])
    cookie = sa[TCP].seq
    for bad in (
        cack(cookie + 1),  # wrong cookie
        cack(cookie, seq=ISN + 2),  # cookie of another ISN
        cack(cookie, sport=40001),  # cookie of another tuple
    ):
        r = engine.send(bad)
        assert r["action"] == "drop" and r["reason"] == "synproxy_bad_cookie", r
    engine.now(50_000 + 3 * 65_536)
    r = engine.send(cack(cookie))
    assert r["reason"] == "synproxy_bad_cookie", "a cookie older than two periods is refused"
    assert engine.counters()["conn_new"] == 0
    assert engine.svc("tcp", VIP, PORT)["syn_cookie_bad"] == 4
    # The next period still accepts it.
    engine.now(50_000 + 65_536)
    sa = handshake_with_client(engine, options=[("MSS", 1460)])
    engine.now(50_000 + 2 * 65_536)
    r = engine.send(cack(sa[TCP].seq))
    assert r["action"] == "forward" and decode(r)[TCP].flags == "S"


def test_client_without_options_and_retransmitted_syn(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa1 = handshake_with_client(engine, options=[])
    sa2 = handshake_with_client(engine, options=[])
    assert sa1[TCP].seq == sa2[TCP].seq, "a retransmitted SYN gets the same cookie"
    assert set(opts(sa1)) == {"MSS"}, "no timestamps, SACK or window scale offered to a client without them"
    r = engine.send(cack(sa1[TCP].seq))
    syn = decode(r)
    assert set(opts(syn)) - {254} <= {"MSS"} and opts(syn)["MSS"] == 536
    # A retransmitted ACK while the server handshakes is not forwarded.
    r = engine.send(cack(sa1[TCP].seq))
    assert r["action"] == "drop" and r["reason"] == "synproxy_wait"


def test_held_segment_becomes_the_final_ack(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa = handshake_with_client(engine)
    cookie, our_ts = sa[TCP].seq, opts(sa)["Timestamp"][0]
    syn = decode(engine.send(cack(cookie, ts=(112, our_ts))))
    lport = syn[TCP].sport
    r = engine.send(cack(cookie, ts=(113, our_ts), payload=b"hello", flags="PA"))
    assert r["action"] == "drop" and r["reason"] == "synproxy_wait"
    assert engine.counters()["synproxy_held"] == 1
    r = engine.send(
        rs(lport, "SA", RS_ISN, ISN + 1, options=[("MSS", 1460), ("Timestamp", (9000, 112)), ("WScale", 7)])
    )
    d = decode(r)
    assert r["port"] == "int" and d[TCP].flags == "PA"
    assert bytes(d[Raw]) == b"hello"
    assert (d[TCP].seq, d[TCP].ack) == (ISN + 1, RS_ISN + 1)
    assert opts(d)["Timestamp"] == (113, 9000)
    assert toa_of(d) == (40000, CLIENT), "the first data segment carries TOA"
    assert_checksums(d)


def test_validating_ack_with_data_is_held(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa = handshake_with_client(engine, options=[("MSS", 1460)])
    r = engine.send(cack(sa[TCP].seq, payload=b"early", flags="PA"))
    syn = decode(r)
    assert syn[TCP].flags == "S" and not syn.haslayer(Raw)
    d = decode(engine.send(rs(syn[TCP].sport, "SA", RS_ISN, ISN + 1, options=[("MSS", 1460)])))
    assert bytes(d[Raw]) == b"early" and d[TCP].ack == RS_ISN + 1
    assert_checksums(d)


def test_server_refusal_resets_the_client_and_dup_synack_is_answered(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    sa = handshake_with_client(engine, options=[("MSS", 1460)])
    syn = decode(engine.send(cack(sa[TCP].seq)))
    r = engine.send(rs(syn[TCP].sport, "RA", 0, ISN + 1))
    assert r["action"] == "forward" and r["port"] == "ext" and r["nexthop"] == CLIENT, r
    rst = decode(r)
    assert rst[TCP].flags == "R" and rst[TCP].seq == sa[TCP].seq + 1
    assert (rst[IP].src, rst[TCP].sport, rst[TCP].dport) == (VIP, PORT, 40000)
    assert_checksums(rst)
    assert engine.counters()["synproxy_rs_rst"] == 1

    _cookie, _our_ts, lport = proxied(engine, sport=40002)
    again = engine.send(rs(lport, "SA", RS_ISN, ISN + 1, options=[("Timestamp", (5003, 112))]))
    a = decode(again)
    assert again["port"] == "int" and a[TCP].flags == "A"
    assert (a[TCP].seq, a[TCP].ack) == (ISN + 1, RS_ISN + 1)
    assert opts(a)["Timestamp"][1] == 5003
    assert_checksums(a)
    r = engine.send(csyn(sport=40002))
    assert r["action"] == "drop" and r["reason"] == "synproxy_syn_on_conn"


def test_window_rescaled_when_the_legs_differ(engine: Engine) -> None:
    engine.apply(doc())
    engine.now(50_000)
    cookie, our_ts, lport = proxied(engine, rs_ws=2)
    d = decode(engine.send(rs(lport, "A", RS_ISN + 1, ISN + 1, options=[("Timestamp", (5001, 112))], window=1000)))
    assert d[TCP].window == (1000 << 2) >> 7
    assert_checksums(d)
    # A server without window scaling: the client's scaled windows are expanded for it.
    cookie, our_ts, lport = proxied(engine, sport=40003, rs_ws=None)
    d = decode(engine.send(cack(cookie, sport=40003, ts=(113, our_ts), window=100)))
    assert d[TCP].window == min(65535, 100 << 8)
    d = decode(engine.send(rs(lport, "A", RS_ISN + 1, ISN + 1, options=[("Timestamp", (5001, 113))], window=1000)))
    assert d[TCP].window == 1000 >> 7
    assert_checksums(d)


def test_mid_flow_segments_without_state_dropped_or_reset(engine: Engine) -> None:
    engine.apply(doc("rst_unknown=on"))
    engine.now(50_000)
    r = engine.send(bytes(client_tcp("A", seq=5, ack=777, dport=PORT)))
    assert r["action"] == "forward" and r["port"] == "ext" and r["nexthop"] == CLIENT, r
    rst = decode(r)
    assert rst[TCP].flags == "R" and rst[TCP].seq == 777 and (rst[IP].src, rst[IP].dst) == (VIP, CLIENT)
    assert_checksums(rst)
    r = engine.send(bytes(client_tcp("R", seq=5, dport=PORT)))
    assert r["action"] == "drop" and r["reason"] == "tcp_no_conn", "never answer a RST"
    frames = [bytes(client_tcp("A", seq=5, ack=777, sport=1000 + i, dport=PORT)) for i in range(64)]
    for _ in range(20):
        engine.burst(frames)
    c = engine.counters()
    assert c["rst_sent"] == 1000 and c["rst_ratelimited"] == 1281 - 1000, "1000 RSTs per second per worker"
    assert engine.svc("tcp", VIP, PORT)["rst_sent"] == 1000
    engine.apply(doc("", gen=2))
    r = engine.send(bytes(client_tcp("A", seq=5, ack=777, dport=PORT)))
    assert r["action"] == "drop" and r["reason"] == "tcp_no_conn"


def test_connection_rate_caps(engine: Engine) -> None:
    engine.apply(doc("conn_rate=5 conn_rate_src24=3"))
    engine.now(50_000)
    verdicts = [engine.send(csyn(sport=41000 + i, options=[])) for i in range(4)]
    assert [r["action"] for r in verdicts] == ["forward"] * 3 + ["drop"]
    assert verdicts[3]["reason"] == "limit_src24"
    for i, src in enumerate(["198.51.100.7", "198.51.100.8", "192.0.2.200"]):
        f = bytes(eth(IP(src=src, dst=VIP) / TCP(sport=42000 + i, dport=PORT, flags="S", seq=1)))
        r = engine.send(f)
        assert r["action"] == ("forward" if i < 2 else "drop"), (i, r)
    assert r["reason"] == "limit_cps"
    s = engine.svc("tcp", VIP, PORT)
    assert s["drop_limit_cps"] == 1 and s["drop_limit_src24"] == 1
    engine.now(51_000)
    assert engine.send(csyn(sport=43000, options=[]))["action"] == "forward", "a second later the buckets refilled"


def test_table_pressure_evicts_half_open_first(engine: Engine) -> None:
    engine.init(capacity=64)
    engine.apply(doc("syn_proxy=off"))
    engine.now(50_000)
    established = []
    for i in range(8):
        syn = decode(engine.send(csyn(sport=44000 + i, options=[])))
        lport = syn[TCP].sport
        engine.send(rs(lport, "SA", RS_ISN, ISN + 1))
        engine.send(bytes(client_tcp("A", seq=ISN + 1, ack=RS_ISN + 1, sport=44000 + i, dport=PORT)))
        assert engine.conn("tcp", CLIENT, 44000 + i, VIP, PORT)["state"] == "tcp_established"
        established.append(lport)
    flood = [bytes(client_tcp("S", seq=9, sport=50000 + i, dport=PORT)) for i in range(200)]
    out = []
    for i in range(0, 200, 50):
        out += engine.burst(flood[i : i + 50])
    assert all(r["action"] == "forward" for r in out), "every new SYN found room"
    c = engine.counters()
    assert c["conn_evicted"] > 0 and c["drop_conn_table_full"] == 0
    assert c["conn_halfopen"] <= 64 - 8
    for i in range(8):
        assert engine.conn("tcp", CLIENT, 44000 + i, VIP, PORT)["state"] == "tcp_established"
    assert engine.conn("tcp", CLIENT, 50000, VIP, PORT) == {"found": False}, "the oldest half-open went first"
    assert engine.conn("tcp", CLIENT, 50199, VIP, PORT)["found"]
    assert engine.conn("tcp", CLIENT, 50199, VIP, PORT)["expires_in_ms"] <= 3000, "half-open timeout shortened"
    r = engine.send(rs(established[0], "A", RS_ISN + 1, ISN + 1))
    assert r["action"] == "forward", "established traffic unaffected"
    assert engine.svc("tcp", VIP, PORT)["conn_evicted"] == c["conn_evicted"]


def test_auto_mode_engages_on_half_open_entries(engine: Engine) -> None:
    engine.apply(doc("syn_proxy=auto syn_proxy_halfopen=5 timeout.tcp_syn_recv=2"))
    engine.now(50_000)
    acts = [decode(engine.send(csyn(sport=45000 + i, options=[])))[TCP].flags for i in range(7)]
    assert acts[:5] == ["S"] * 5, "below the threshold SYNs go to the server"
    assert acts[5:] == ["SA", "SA"], "then the proxy answers"
    assert engine.svc("tcp", VIP, PORT)["syn_proxy_active"] == 1
    engine.now(70_000)
    engine.housekeep(4096)
    assert engine.counters()["conn_halfopen"] == 0
    assert decode(engine.send(csyn(sport=46000, options=[])))[TCP].flags == "S", "disengaged after the hold time"
    assert engine.svc("tcp", VIP, PORT)["syn_proxy_active"] == 0


def test_syn_proxy_on_udp_or_bad_values_is_refused(engine: Engine) -> None:
    for bad in ("syn_proxy=maybe", "conn_rate=-1", "syn_proxy_halfopen=0"):
        r = engine.config(doc(bad))
        assert not r["ok"], bad
    r = engine.config("vgw-config 1\ngeneration 1\nservice u udp 192.0.2.10 53 wrr syn_proxy=on\nend\n")
    assert not r["ok"] and "TCP only" in r["error"]


def test_icmp_error_quoting_a_proxied_segment_gets_server_numbers(engine: Engine) -> None:
    from scapy.layers.inet import ICMP

    engine.apply(doc())
    engine.now(50_000)
    cookie, _our_ts, lport = proxied(engine)
    out = decode(
        engine.send(rs(lport, "PA", RS_ISN + 1, ISN + 1, options=[("Timestamp", (5001, 112))], payload=b"x" * 100))
    )
    assert out[TCP].seq == cookie + 1
    quoted = bytes(out[IP])[:28]
    err = eth(IP(src="203.0.113.1", dst=VIP, ttl=64) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted))
    reply = engine.send(bytes(err))
    assert reply["action"] == "forward" and reply["port"] == "int", reply
    icmp = decode(reply)
    assert_checksums(icmp)
    inner = bytes(icmp[ICMP].payload)
    assert int.from_bytes(inner[24:28], "big") == RS_ISN + 1, "the server sees its own sequence number"


def test_no_room_for_the_syn_ack_is_a_counted_drop(engine: Engine) -> None:
    engine.init(headroom=0, tailroom=0)
    engine.apply(doc())
    engine.now(50_000)
    r = engine.send(csyn(options=[]))  # 20-byte TCP header: our SYN-ACK needs 4 more bytes
    assert r["action"] == "drop" and r["reason"] == "synproxy_no_room", r
    assert engine.counters()["syn_cookie_sent"] == 0
