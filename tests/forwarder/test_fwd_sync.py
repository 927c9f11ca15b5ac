"""Connection sync between two real vgw-fwd (DPDK, af_packet on veths): a long-lived TCP stream
opened through node A continues, every byte checked, when the client's route moves to node B
(what an ECMP change does when A is withdrawn, isolated or drained); without sync the same move
breaks it. Bad sync datagrams (a stranger, a wrong key, a replay, a wrong TTL) change nothing
and are counted.

    client ns 203.0.113.2 --+-- br-ext --+-- node A ext 203.0.113.11   int 198.18.0.1 --+-- br-int -- backend
                            |            +-- node B ext 203.0.113.12   int 198.18.0.2 --+   198.18.0.11:9000
    VIP 192.0.2.10:9000, LIP A 198.18.0.101, LIP B 198.18.0.102; the backend runs a TCP echo server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.fwdproc import vgw_fwd
from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files, run
from vgw.fwdctl import FwdClient

pytestmark = [needs_lab, pytest.mark.integration]

CLIENT, VIP, PORT = "203.0.113.2", "192.0.2.10", 9000
EXT = {"a": "203.0.113.11", "b": "203.0.113.12"}
INT = {"a": "198.18.0.1", "b": "198.18.0.2"}
LIPS = {"a": "198.18.0.101", "b": "198.18.0.102"}
BACKEND = "198.18.0.11"
SYNC_PORT = 8473

ECHO_SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d: return
            c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

# One connection; a numbered 32-byte line every 20 ms, every echoed byte compared; progress (lines
# echoed) rewritten to a file; stops at the stop file or after a 3 s stall (then says so).
STREAM_CLIENT = r"""
import json, os, socket, sys, time
vip, port, progress, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {"lines": 0, "error": None, "max_gap_ms": 0.0}
try:
    c = socket.create_connection((vip, port), timeout=5); c.settimeout(3)
    n, last = 0, time.monotonic()
    while not os.path.exists(stop):
        line = b"%031d\n" % n
        c.sendall(line)
        got = b""
        while len(got) < len(line):
            d = c.recv(len(line) - len(got))
            if not d: raise ConnectionError("closed by the peer")
            got += d
        if got != line: raise ValueError(f"line {n}: sent {line!r}, echoed {got!r}")
        now = time.monotonic(); out["max_gap_ms"] = max(out["max_gap_ms"], (now - last) * 1000); last = now
        n += 1; out["lines"] = n
        with open(progress + ".tmp", "w") as f: f.write(str(n))
        os.replace(progress + ".tmp", progress)
        time.sleep(0.02)
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


@dataclass
class SyncLab:
    workdir: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    sockets: dict[str, Path] = field(default_factory=dict)

    def ns(self, role: str) -> str:
        return f"vgy{role}-{self.suffix}"

    def _ns(self, role: str) -> str:
        name = self.ns(role)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)
        return name

    def _veth(self, a: str, ns_a: str, b: str, ns_b: str, bridge: str | None = None) -> None:
        run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        run("ip", "link", "set", a, "netns", ns_a)
        run("ip", "link", "set", b, "netns", ns_b)
        for ifc, ns in ((a, ns_a), (b, ns_b)):
            run("ethtool", "-K", ifc, "tx", "off", "tso", "off", "gso", "off", "gro", "off", check=False, ns=ns)
            run("sysctl", "-qw", f"net.ipv6.conf.{ifc}.disable_ipv6=1", check=False, ns=ns)
            run("ip", "link", "set", ifc, "up", ns=ns)
        if bridge:
            run("ip", "link", "set", b, "master", bridge, ns=ns_b)

    def build(self) -> SyncLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cl, sw, be = self._ns("c"), self._ns("s"), self._ns("b")
        for br in ("brx", "bri"):
            run("ip", "link", "add", br, "type", "bridge", "forward_delay", "0", ns=sw)
            run("ip", "link", "set", br, "up", ns=sw)
        self._veth(f"yc{self.suffix}", cl, f"ycs{self.suffix}", sw, "brx")
        run("ip", "addr", "add", f"{CLIENT}/24", "dev", f"yc{self.suffix}", ns=cl)
        self._veth(f"yb{self.suffix}", be, f"ybs{self.suffix}", sw, "bri")
        run("ip", "addr", "add", f"{BACKEND}/24", "dev", f"yb{self.suffix}", ns=be)
        for n in ("a", "b"):
            f = self._ns(f"f{n}")
            run("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=f)
            self._veth(f"yx{n}{self.suffix}", f, f"yxs{n}{self.suffix}", sw, "brx")
            self._veth(f"yi{n}{self.suffix}", f, f"yis{n}{self.suffix}", sw, "bri")
        self.route_to("a")
        (self.workdir / "echo.py").write_text(ECHO_SERVER)
        self._spawn(["ip", "netns", "exec", be, sys.executable, str(self.workdir / "echo.py"), str(PORT)], "echo")
        deadline = time.monotonic() + 10
        while run("ss", "-ltnH", f"sport = :{PORT}", ns=be).stdout.strip() == "":
            assert time.monotonic() < deadline, "echo server did not start"
            time.sleep(0.05)
        key = self.workdir / "sync.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(16) + "\n")
        return self

    def route_to(self, node: str) -> None:
        """The client's path to the VIP goes through `node`: what the router does after an ECMP change."""
        run("ip", "route", "replace", f"{VIP}/32", "via", EXT[node], ns=self.ns("c"))

    @property
    def key(self) -> bytes:
        return bytes.fromhex((self.workdir / "sync.key").read_text().strip())

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def start_forwarder(self, n: str, sync: bool) -> None:
        other = "b" if n == "a" else "a"
        cfg = self.workdir / f"cfg-{n}.txt"
        cfg.write_text(
            f"vgw-config 1\ngeneration 1\nservice echo tcp {VIP} {PORT} maglev\nlip echo {LIPS[n]}\n"
            f"backend echo {BACKEND} {PORT} 1 active\nend\n"
        )
        settings = self.workdir / f"fwd-{n}.conf"
        lines = [f"ext net_af_packet0 {EXT[n]}/24", f"int net_af_packet1 {INT[n]}/24", "workers 1",
                 "conn-capacity 4096", f"apply {cfg}", f"socket {self.workdir / f'fwd-{n}.sock'}"]  # fmt: skip
        if sync:
            lines += [f"sync-peer {INT[other]}", f"sync-port {SYNC_PORT}", f"sync-key-file {self.workdir / 'sync.key'}",
                      "sync-heartbeat-ms 100", "sync-dead-ms 500"]  # fmt: skip
        settings.write_text("\n".join(lines) + "\n")
        prefix = f"vgy{self.suffix}{n}{secrets.token_hex(2)}"
        self.prefixes.append(prefix)
        f = self.ns(f"f{n}")
        cmd = [
            "ip", "netns", "exec", f, str(FWD_BIN), "--no-huge", "-m", "128", "--file-prefix", prefix,
            "--lcores", "0@0,1@1" if (os.cpu_count() or 1) > 1 else "0@0,1@0", "--no-pci", "--log-level", "*:notice",
            "--vdev", f"net_af_packet0,iface=yx{n}{self.suffix}", "--vdev", f"net_af_packet1,iface=yi{n}{self.suffix}",
            "--", "--config", str(settings),
        ]  # fmt: skip
        log = self.workdir / f"fwd-{n}.log"
        self._spawn(cmd, f"fwd-{n}")
        self.sockets[n] = self.workdir / f"fwd-{n}.sock"
        deadline = time.monotonic() + 20
        while "vgw-fwd ready" not in log.read_text(errors="replace"):
            assert self.procs[-1].poll() is None, f"vgw-fwd {n} exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"vgw-fwd {n} not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)

    def kill_forwarder(self, n: str) -> None:
        """kill -9, as a crash: nothing is cleaned up by the forwarder itself."""
        idx = [i for i, p in enumerate(self.procs) if f"yx{n}{self.suffix}" in " ".join(map(str, p.args))]
        for i in idx:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[i].pid, signal.SIGKILL)
            self.procs[i].wait(timeout=10)

    def stats(self, n: str) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            c = FwdClient(str(self.sockets[n]), timeout_s=5)
            try:
                return await c.stats()
            finally:
                await c.close()

        return asyncio.run(go())

    def counter(self, n: str, name: str) -> int:
        return int(self.stats(n)["counters"].get(name, 0))

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for prefix in self.prefixes:
            cleanup_dpdk_files(prefix)
        for ns in reversed(self.namespaces):
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def sync_lab(tmp_path: Path, sync: bool, start_a: bool = True) -> Iterator[SyncLab]:
    lab = SyncLab(tmp_path / "sync")
    try:
        lab.build()
        if start_a:
            lab.start_forwarder("a", sync)
        lab.start_forwarder("b", sync)
        yield lab
    finally:
        lab.close()


def _progress(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _wait(cond: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.05)


def stream_across_a_route_move(lab: SyncLab, kill_a: bool = False) -> tuple[dict[str, Any], int, int]:
    """A stream opened through A; the client's route moves to B (after A's forwarder is killed, with
    kill_a: a node failure); the stream goes on until 50 more lines were echoed after the move, or
    it fails. Returns the client's report and the lines echoed before and after the move."""
    progress, stop = lab.workdir / "progress", lab.workdir / "stop"
    script = lab.workdir / "stream.py"
    script.write_text(STREAM_CLIENT)
    p = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("c"), sys.executable, str(script), VIP, str(PORT), str(progress), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    lab.procs.append(p)
    _wait(lambda: _progress(progress) >= 25 or p.poll() is not None, "echoes through node A")
    before = _progress(progress)
    if kill_a:
        lab.kill_forwarder("a")
    lab.route_to("b")
    # The move is complete once B forwarded the client's packets; then 50 more lines (or a failure)
    _wait(lambda: lab.counter("b", "fwd_inbound") > 0 or p.poll() is not None, "client packets at node B")
    moved_at = _progress(progress)
    _wait(lambda: _progress(progress) >= moved_at + 50 or p.poll() is not None, "echoes after the move", 20)
    stop.write_text("")
    out, _ = p.communicate(timeout=15)
    report = json.loads(out.decode().strip().splitlines()[-1])
    return report, before, report["lines"] - moved_at


def test_a_stream_survives_a_route_move_with_sync(tmp_path: Path) -> None:
    with sync_lab(tmp_path, sync=True) as lab:
        report, before, after = stream_across_a_route_move(lab)
        assert report["error"] is None, report
        assert before >= 25 and after >= 50, (before, after, report)
        # Every line echoed after the move was sent through B, but for the one in flight when the
        # route moved (its segment went through A): the client has one line outstanding at a time.
        # Workers publish their counters every 100 ms: wait for the last lines to show.
        _wait(lambda: lab.counter("b", "fwd_inbound") >= after - 1, "B's counters covering the stream", 3)
        _wait(lambda: lab.counter("a", "fwd_outbound") >= before + after, "A's counters covering the stream", 3)
        sa, sb = lab.stats("a")["counters"], lab.stats("b")["counters"]
        # A announced the connection once established (not while half-open), B imported it and
        # carried it on from A's LIP (it never made a connection of its own); the server's replies
        # still came back through A (its LIP)
        assert sa["fwd_sync_sent_records"] >= 1 and sb["fwd_sync_imported_records"] >= 1, (sa, sb)
        assert sb["conn_new"] == 0, sb
        for name in ("drop_sync_invalid", "drop_sync_replayed", "drop_sync_unknown_peer"):
            assert sb[f"fwd_{name}"] == 0, (name, sb)


def test_a_stream_survives_the_failure_of_its_node(tmp_path: Path) -> None:
    """kill -9 of A's forwarder: B carries the stream on and, once A has been silent for
    sync-dead-ms, answers for A's LIP (gratuitous ARP), so the server's replies reach B. When A
    comes back, B gives the LIP back."""
    with sync_lab(tmp_path, sync=True) as lab:
        report, before, after = stream_across_a_route_move(lab, kill_a=True)
        assert report["error"] is None, report
        assert before >= 25 and after >= 50, (before, after, report)
        st = lab.stats("b")
        sync, c = st["sync"], st["counters"]
        assert sync["peers"][0]["state"] == "down" and sync["foreign_lips"] == 1, sync
        # the server's replies to A's LIP came to B (its gratuitous ARP), which translated them
        assert c["ctl_sync_takeovers"] == 1 and c["fwd_outbound"] >= 25 and c["conn_new"] == 0, c
        lab.start_forwarder("a", sync=True)
        _wait(lambda: lab.stats("b")["sync"]["peers"][0]["state"] == "up", "A heard again at B")
        st = lab.stats("b")
        assert st["sync"]["foreign_lips"] == 0 and st["counters"]["ctl_sync_releases"] == 1, st["sync"]


def test_without_sync_the_same_move_breaks_the_stream(tmp_path: Path) -> None:
    with sync_lab(tmp_path, sync=False) as lab:
        report, before, after = stream_across_a_route_move(lab)
        assert before >= 25
        assert report["error"] is not None and after < 5, report
        assert lab.counter("b", "drop_tcp_no_conn") > 0


# --- bad sync datagrams -------------------------------------------------------------------------


def _siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (the reference algorithm), an independent check of the forwarder's MAC."""
    mask = (1 << 64) - 1

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & mask

    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & mask
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & mask
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & mask
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & mask
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    tail = len(data) & 7
    for i in range(0, len(data) - tail, 8):
        m = struct.unpack_from("<Q", data, i)[0]
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    b = (len(data) & 0xFF) << 56
    for i in range(tail):
        b |= data[len(data) - tail + i] << (8 * i)
    v[3] ^= b
    rounds(2)
    v[0] ^= b
    v[2] ^= 0xFF
    rounds(4)
    return (v[0] ^ v[1] ^ v[2] ^ v[3]) & mask


def sync_message(key: bytes, sender: str, epoch: int, seq: int, cport: int) -> bytes:
    """One record, in the format docs/forwarder.md describes (built here independently of the C)."""
    import ipaddress

    def a(x: str) -> bytes:
        return ipaddress.IPv4Address(x).packed

    rec = bytes([4, 6, 1, 0]) + a(CLIENT) + a(VIP) + a(LIPS["a"]) + a(BACKEND)
    rec += struct.pack(">HHHHII", cport, PORT, 2000, PORT, 60000, 0) + bytes(12)
    body = b"VS" + bytes([1, 1]) + a(sender) + struct.pack(">QIHH", epoch, seq, 1, 0) + rec
    return body + struct.pack(">Q", _siphash24(key, body))


def send_udp(lab: SyncLab, src: str, dst: str, payload: bytes, ttl: int = 255) -> None:
    """From the backend's namespace (on the internal segment), with any source address (scapy)."""
    script = (
        "import sys\nfrom scapy.all import IP, UDP, Raw, send\n"
        f"send(IP(src={src!r}, dst={dst!r}, ttl={ttl}) / UDP(sport={SYNC_PORT}, dport={SYNC_PORT}) / "
        f"Raw(bytes.fromhex({payload.hex()!r})), verbose=0)\n"
    )
    r = run(sys.executable, "-c", script, ns=lab.ns("b"), check=False, timeout=60)
    assert r.returncode == 0, r.stderr


def test_bad_sync_datagrams_change_nothing(tmp_path: Path) -> None:
    # B alone (A's forwarder never starts): this test speaks for A, holding the cluster key
    with sync_lab(tmp_path, sync=True, start_a=False) as lab:
        key, a_int, b_int = lab.key, INT["a"], INT["b"]
        # the backend needs the forwarder's MAC: the kernel resolves it (the forwarder answers ARP)
        good = sync_message(key, a_int, epoch=1, seq=1, cport=41000)

        def bump(name: str, before: int) -> None:
            _wait(lambda: lab.counter("b", f"fwd_{name}") > before, name)

        before = lab.stats("b")["counters"]
        send_udp(lab, BACKEND, b_int, good)  # a stranger (not a sync peer), even with a valid MAC
        bump("drop_sync_unknown_peer", before["fwd_drop_sync_unknown_peer"])
        send_udp(lab, a_int, b_int, good, ttl=64)  # a peer's address from off-link
        bump("drop_sync_unknown_peer", before["fwd_drop_sync_unknown_peer"] + 1)
        forged = sync_message(bytes(16) + b"", a_int, epoch=1, seq=1, cport=41000)
        send_udp(lab, a_int, b_int, forged)  # the wrong key
        bump("drop_sync_invalid", before["fwd_drop_sync_invalid"])
        send_udp(lab, a_int, b_int, good[:-3])  # truncated
        bump("drop_sync_invalid", before["fwd_drop_sync_invalid"] + 1)
        assert lab.counter("b", "fwd_sync_imported_records") == before["fwd_sync_imported_records"]
        assert lab.stats("b")["counters"]["conn_active"] == 0

        # the real thing (this test holds the key): imported once; the same datagram again is a replay
        send_udp(lab, a_int, b_int, good)
        bump("sync_imported_records", before["fwd_sync_imported_records"])
        send_udp(lab, a_int, b_int, good)
        bump("drop_sync_replayed", before["fwd_drop_sync_replayed"])
        after = lab.stats("b")["counters"]
        assert after["fwd_sync_imported_records"] == before["fwd_sync_imported_records"] + 1
        assert after["conn_active"] == 1
        # an older epoch of the same peer (a previous run) is stale
        send_udp(lab, a_int, b_int, sync_message(key, a_int, epoch=0, seq=9, cport=41001))
        bump("drop_sync_replayed", after["fwd_drop_sync_replayed"])
        assert lab.stats("b")["counters"]["conn_active"] == 1


# --- bad sync settings: refused at start, with the reason ---------------------------------------

RING_EAL = ["--lcores", "0@0,1@0", "--vdev", "net_ring0", "--vdev", "net_ring1"]
RING_ARGS = ["--ext", "net_ring0,203.0.113.1/24", "--int", "net_ring1,198.18.0.1/24", "--workers", "1",
             "--conn-capacity", "4096"]  # fmt: skip


def _key(d: Path, mode: int = 0o600) -> Path:
    k = d / "sync.key"
    k.write_text(secrets.token_hex(16) + "\n")
    k.chmod(mode)
    return k


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (lambda d: ["--sync-peer", "198.18.0.2"], r"sync-peer needs sync-key-file: connection sync is authenticated"),
        (lambda d: ["--sync-peer", "198.18.0.1", "--sync-key-file", str(_key(d))], r"is this node's own internal"),
        (lambda d: ["--sync-peer", "198.51.100.9", "--sync-key-file", str(_key(d))], r"is not on the internal port's"),
        (lambda d: ["--sync-peer", "198.18.0.2", "--sync-key-file", str(_key(d, 0o644))], r"mode 0644 gives group"),
        (lambda d: ["--sync-peer", "198.18.0.300"], r"bad setting|invalid|sync-peer"),
        (lambda d: ["--sync-port", "0"], r"bad setting|invalid|sync-port"),
    ],
    ids=["no-key", "self", "off-subnet", "key-0644", "bad-address", "port-0"],
)
def test_bad_sync_settings_refused(tmp_path: Path, args: Any, error: str) -> None:
    with (
        pytest.raises(RuntimeError, match=r"exited with 2") as exc,
        vgw_fwd(tmp_path, RING_EAL, [*RING_ARGS, *args(tmp_path)]),
    ):
        pass
    assert re.search(error, str(exc.value)), str(exc.value)[-600:]


def test_sync_forces_client_steering_with_two_workers(tmp_path: Path) -> None:
    two = ["--lcores", "0@0,1@0,2@0", "--vdev", "net_ring0", "--vdev", "net_ring1"]
    args = [a if a != "1" else "2" for a in RING_ARGS]
    with (
        pytest.raises(RuntimeError, match=r"exited with 2") as exc,
        vgw_fwd(
            tmp_path,
            two,
            [*args, "--sync-peer", "198.18.0.2", "--sync-key-file", str(_key(tmp_path)), "--steer-clients", "off"],
        ),  # fmt: skip
    ):
        pass
    assert "sync-peer with more than one worker needs steer-clients on or auto" in str(exc.value)
