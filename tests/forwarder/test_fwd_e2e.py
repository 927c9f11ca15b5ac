"""vgw-fwd end to end: real DPDK (af_packet on veths, dual-arm, 2 workers), real TCP, real HTTP.

Covers issue #4's acceptance for the forwarder itself: 300 requests through the VIP all succeed and
spread within 20% of even; backends see the LIP; a capture on a backend shows TOA with the
client's address and port; garbage on the control socket is rejected while forwarding goes on;
telemetry is readable with dpdk-telemetry.py; an idle forwarder uses < 5% of a core; SIGTERM stops
it cleanly. The shim's part (NATS, health, restart re-apply) is in test_shim_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.forwarder.conftest import config_doc, needs_lab
from tests.forwarder.topology import BACKEND_IPS, CLIENT_IP, LIP, VIP, Topology, http_requests, run
from vgw.fwdctl import APPLY, DELTA, HELLO, STATS, FwdClient, FwdError, frame

pytestmark = [needs_lab, pytest.mark.integration]


def ctl(sock: Path) -> FwdClient:
    return FwdClient(str(sock), timeout_s=5)


async def _apply(sock: Path, doc: str) -> int:
    c = ctl(sock)
    try:
        return await c.apply(doc)
    finally:
        await c.close()


async def _stats(sock: Path) -> dict[str, Any]:
    c = ctl(sock)
    try:
        return await c.stats()
    finally:
        await c.close()


@pytest.fixture(scope="module")
def fwd(lab: Topology) -> Topology:
    lab.start_forwarder(workers=2)
    assert lab.forwarder is not None
    asyncio.run(_apply(lab.forwarder.socket, config_doc(1)))
    return lab


class Capture:
    """tcpdump on an interface in a namespace, written to a pcap file as packets arrive.

    ``--immediate-mode`` matters: without it libpcap uses a TPACKET_V3 ring whose blocks reach
    user space only when full or when the kernel's block timer (tcpdump's 1 s timeout) retires
    them, and tcpdump drops the unretired block when it is interrupted: a short capture stopped
    within that second comes out empty. Immediate mode (TPACKET_V2) hands over every packet at
    once, and ``-U`` writes it to the file at once, so the file can be read while capturing.
    """

    def __init__(self, ns: str, ifname: str, pcap: Path, bpf: str, timeout_s: float = 10) -> None:
        self.pcap = pcap
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "--immediate-mode", "-U", "-n", "-w", str(pcap), bpf],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        # tcpdump says "listening on" once the socket is bound and the filter is attached
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.stderr = b""
        deadline = time.monotonic() + timeout_s
        while b"listening on" not in self.stderr:
            self.stderr += self.proc.stderr.read() or b""
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tcpdump did not start listening: {self.stderr.decode(errors='replace')}")
            time.sleep(0.02)

    def packets(self) -> list[bytes]:
        """The frames written so far (a record still being written is left for the next call)."""
        data = self.pcap.read_bytes() if self.pcap.exists() else b""
        if len(data) < 24:
            return []
        endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        frames, off = [], 24
        while off + 16 <= len(data):
            caplen = struct.unpack(endian + "IIII", data[off : off + 16])[2]
            if off + 16 + caplen > len(data):
                break
            frames.append(data[off + 16 : off + 16 + caplen])
            off += 16 + caplen
        return frames

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        assert self.proc.stderr is not None
        self.stderr += self.proc.stderr.read() or b""


def tcp_segments(frames: list[bytes]) -> list[Any]:
    from scapy.all import TCP, Ether

    return [pkt[TCP] for pkt in (Ether(f) for f in frames) if TCP in pkt]


def toa_options(segments: list[Any]) -> list[tuple[str, int]]:
    out = []
    for seg in segments:
        for kind, value in seg.options:
            if kind == 254 and isinstance(value, bytes) and len(value) == 6:
                port, addr = struct.unpack("!H4s", value)
                out.append((socket.inet_ntoa(addr), port))
    return out


def test_http_spread_lip_and_toa(fwd: Topology) -> None:
    # capture client->server segments on backend 0 (the SYN and the first ACK carry TOA)
    cap = Capture(fwd.ns_backend(0), fwd.if_backend(0), fwd.workdir / "be0.pcap", f"tcp dst port 80 and src host {LIP}")
    try:
        before = [len(fwd.backend_log(i)) for i in range(3)]
        stats_before = asyncio.run(_stats(fwd.forwarder.socket))  # type: ignore[union-attr]
        result = http_requests(fwd, 300)
        client_ports = set(result["ports"])  # type: ignore[arg-type]
        # every connection backend 0 served (its log names the LIP port) has its SYN in the capture
        served = {e["port"] for e in fwd.backend_log(0)[before[0] :]}
        deadline = time.monotonic() + 10
        while True:
            segments = tcp_segments(cap.packets())
            syn_ports = {seg.sport for seg in segments if seg.flags.S}
            if served <= syn_ports or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        cap.stop()
    missing = served - syn_ports
    assert not missing, f"capture lacks the SYNs of {len(missing)} of {len(served)} connections: {cap.stderr!r}"

    assert result["nerrors"] == 0, result
    counts = result["counts"]
    assert isinstance(counts, dict)
    assert sum(counts.values()) == 300
    assert set(counts) == {"be0", "be1", "be2"}
    print(f"300 requests through the VIP: {dict(sorted(counts.items()))}")
    for name, n in counts.items():
        assert 80 <= n <= 120, f"{name} got {n} of 300: not within 20% of even ({counts})"
    # backends see the LIP as the source of every connection
    for i in range(3):
        new = fwd.backend_log(i)[before[i] :]
        assert new, f"backend {i} saw nothing"
        assert {e["peer"] for e in new} == {LIP}
    # TOA: option 254 with the client's address and port
    toas = toa_options(segments)
    assert toas, "no TOA option seen on backend 0"
    syns = [seg for seg in segments if seg.flags.S]
    assert len(toa_options(syns)) == len(syns), "a SYN to backend 0 without TOA"
    assert {a for a, _ in toas} == {CLIENT_IP}
    assert {p for _, p in toas} <= client_ports, (sorted(client_ports)[:5], toas[:5])
    # two workers, af_packet fanout: replies reach the wrong worker and are handed over. Each
    # worker publishes its counters every 100 ms, so the two sides of a hand-over (the last FINs
    # and ACKs are still in flight when the client returns) agree once both have published.
    deadline = time.monotonic() + 10
    while True:
        c = asyncio.run(_stats(fwd.forwarder.socket))["counters"]  # type: ignore[union-attr]
        if c["fwd_handoff_received"] == c["fwd_handoff_sent"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert c["fwd_handoff_sent"] > 0 and c["fwd_handoff_received"] == c["fwd_handoff_sent"], c
    assert c["fwd_drop_handoff_full"] == 0 and c["drop"] == 0, c
    # per backend (read live from the workers, no snapshot lag): each request was one new
    # connection to the backend that logged it, and the backends' counts add up to the service's
    web = asyncio.run(_stats(fwd.forwarder.socket))["services"]["web"]  # type: ignore[union-attr]
    new_per_backend = {
        b["address"]: b["conn_new"] - old["conn_new"]
        for b, old in zip(web["backends"], stats_before["services"]["web"]["backends"], strict=True)
    }
    assert new_per_backend == {ip: counts[f"be{i}"] for i, ip in enumerate(BACKEND_IPS)}, (new_per_backend, counts)
    assert [(b["port"], type(b["conn_active"])) for b in web["backends"]] == [(80, int)] * 3


def test_control_socket_garbage(fwd: Topology) -> None:
    assert fwd.forwarder is not None
    sock = str(fwd.forwarder.socket)

    async def scenario() -> None:
        good = ctl(fwd.forwarder.socket)  # type: ignore[union-attr]
        gen0 = (await good.hello())["generation"]
        cfg0 = await good.config()

        async def raw(data: bytes) -> bytes:
            reader, writer = await asyncio.open_unix_connection(sock)
            try:
                writer.write(data)
                await writer.drain()
                return await asyncio.wait_for(reader.read(65536), 5)
            finally:
                writer.close()

        rng = random.Random(4)
        replies = []
        replies.append(await raw(bytes(rng.getrandbits(8) for _ in range(4096))))  # random bytes
        replies.append(await raw(frame(APPLY, b"x" * 16, version=2)))  # wrong version
        replies.append(await raw(frame(HELLO, magic=b"HTTP")))  # wrong magic
        replies.append(await raw(frame(99)))  # unknown type
        big = struct.pack("!4sBBHII", b"VGWC", 1, STATS, 0, 1 << 30, 7)  # oversized: 1 GiB promised
        replies.append(await raw(big))
        big_delta = struct.pack("!4sBBHII", b"VGWC", 1, DELTA, 0, 64 << 20, 8)
        replies.append(await raw(big_delta))
        for rep in replies:
            assert rep[:4] == b"VGWC", rep[:64]
            flags = struct.unpack("!H", rep[6:8])[0]
            assert flags & 1, rep
        # semantically bad documents on a healthy connection: each an error, nothing applied
        bad_docs = [
            config_doc(gen0 + 1).replace(VIP, "300.0.2.10"),  # bad address
            config_doc(gen0 + 1).replace(LIP, "127.0.0.1"),  # loopback LIP
            config_doc(gen0 + 1).replace("\nend\n", "\n"),  # truncated
            config_doc(gen0),  # generation not newer
            "\x00\xff" * 100,  # binary
            config_doc(gen0 + 1).replace("198.18.0.11 80 100", "198.18.0.11 80 99999"),  # weight range
        ]
        for doc in bad_docs:
            with pytest.raises(FwdError):
                await good.apply(doc)
        bad_deltas = [
            f"vgw-delta 1\ngeneration {gen0 + 1}\nbackend add web 198.18.0.500 80 1 active\nend\n",
            f"vgw-delta 1\ngeneration {gen0 + 1}\nbackend remove nosuch 198.18.0.11 80\nend\n",
            f"vgw-delta 1\ngeneration {gen0 + 1}\nbackend state web 198.18.0.11 80 sleepy\nend\n",
            f"vgw-delta 1\ngeneration {gen0 + 1}\nservice add web2 tcp {LIP} 80 maglev\nlip add web2 {LIP}\nend\n",
            f"vgw-delta 2\ngeneration {gen0 + 1}\nend\n",
            f"vgw-delta 1\ngeneration {gen0 + 1}\nbackend weight web 198.18.0.11 80 5\n",  # no end
        ]
        for doc in bad_deltas:
            with pytest.raises(FwdError):
                await good.delta(doc)
        assert (await good.hello())["generation"] == gen0
        assert await good.config() == cfg0
        stats = await good.stats()
        assert stats["counters"]["ctl_ctl_errors"] >= len(replies) + len(bad_docs) + len(bad_deltas)
        await good.close()

    asyncio.run(scenario())
    # and it still forwards
    result = http_requests(fwd, 30)
    assert result["nerrors"] == 0, result


def test_delta_drain_keeps_connection(fwd: Topology) -> None:
    """A delta drains a backend: no new connections to it, its established one keeps working."""
    assert fwd.forwarder is not None

    async def go() -> None:
        c = ctl(fwd.forwarder.socket)  # type: ignore[union-attr]
        gen = (await c.hello())["generation"]
        slow = subprocess.Popen(
            ["ip", "netns", "exec", fwd.ns_client, "curl", "-sS", "-N", "--max-time", "20",
             f"http://{VIP}/slow?s=3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # the backend that logs the request owns the connection (curl in a namespace may take a
        # while to start on a loaded machine: wait for the log, not for a guessed time)
        owner = None
        deadline = time.monotonic() + 10
        while owner is None and time.monotonic() < deadline and slow.poll() is None:
            owner = next((i for i in range(3) if any(e["path"].startswith("/slow") for e in fwd.backend_log(i))), None)
            await asyncio.sleep(0.05)
        assert owner is not None, f"no backend saw /slow (curl: {slow.poll()})"
        # the per-service gauge comes from the workers' snapshots, published every 100 ms
        while True:
            st = await c.stats()
            active = st["services"]["web"]["conn_active"]
            if active >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert 1 <= active <= st["counters"]["conn_active"], st["services"]
        # the owner's own gauge counts the streaming connection (read live from the workers)
        owner_row = st["services"]["web"]["backends"][owner]
        assert owner_row["address"] == BACKEND_IPS[owner] and owner_row["conn_active"] >= 1, owner_row

        await c.delta(f"vgw-delta 1\ngeneration {gen + 1}\nbackend state web {BACKEND_IPS[owner]} 80 draining\nend\n")
        res = http_requests(fwd, 30)
        assert res["nerrors"] == 0
        assert f"be{owner}" not in res["counts"]  # type: ignore[operator]
        after = (await c.stats())["services"]["web"]["backends"]
        assert after[owner]["conn_new"] == owner_row["conn_new"], (owner_row, after)  # drained: nothing new
        assert sum(b["conn_new"] for b in after) == sum(b["conn_new"] for b in st["services"]["web"]["backends"]) + 30
        out, err = slow.communicate(timeout=20)
        assert slow.returncode == 0, err
        assert out.decode().count(f"be{owner}") >= 25  # the whole stream came through
        await c.delta(f"vgw-delta 1\ngeneration {gen + 2}\nbackend state web {BACKEND_IPS[owner]} 80 active\nend\n")
        await c.close()

    asyncio.run(go())


def test_telemetry_with_dpdk_telemetry_py(fwd: Topology) -> None:
    assert fwd.forwarder is not None
    tool = "/usr/bin/dpdk-telemetry.py"
    if not Path(tool).exists():
        pytest.skip("dpdk-telemetry.py not installed (Debian package dpdk-dev)")

    def query(cmd: str) -> dict[str, object]:
        r = subprocess.run(
            [tool, "-f", fwd.forwarder.prefix],  # type: ignore[union-attr]
            input=cmd + "\n", capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("{"))
        return dict(json.loads(line)[cmd.split(",", maxsplit=1)[0]])

    svc = query("/vgw/service,web")
    assert svc["vip"] == VIP and int(svc["packets_in"]) > 0 and int(svc["conn_new"]) > 0  # type: ignore[call-overload]
    stats = query("/vgw/stats")
    assert int(stats["fwd_inbound"]) > 0 and int(stats["handoff"]) >= 0  # type: ignore[call-overload]
    drops = query("/vgw/drops")
    assert "drop_l4_bad_csum" in drops and "drop_no_route" in drops
    ports = query("/vgw/ports")
    assert set(ports) == {"ext", "int"}
    assert query("/vgw/info")["mode"] == "dual-arm"


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_cpu_below_5_percent(fwd: Topology) -> None:
    assert fwd.forwarder is not None
    pid = fwd.forwarder.pid
    time.sleep(1.0)  # let the workers back off
    c0, t0 = proc_cpu_seconds(pid), time.monotonic()
    time.sleep(4.0)
    c1, t1 = proc_cpu_seconds(pid), time.monotonic()
    share = (c1 - c0) / (t1 - t0)
    print(f"idle vgw-fwd (2 workers + control): {share * 100:.2f}% of one core")
    assert share < 0.05, f"idle forwarder used {share * 100:.1f}% of a core"


def test_arp_for_the_vip(fwd: Topology) -> None:
    """With the VIP on-link (as a router ARPs for it), the forwarder answers ARP for the VIP itself."""
    run("ip", "route", "replace", f"{VIP}/32", "dev", fwd.if_client, ns=fwd.ns_client)
    try:
        result = http_requests(fwd, 10)
        assert result["nerrors"] == 0, result
        neigh = run("ip", "neigh", "show", VIP, ns=fwd.ns_client).stdout
        ext_mac = run("cat", f"/sys/class/net/{fwd.if_ext}/address", ns=fwd.ns_fwd).stdout.strip()
        assert ext_mac and ext_mac in neigh, (neigh, ext_mac)
    finally:
        run("ip", "route", "del", f"{VIP}/32", ns=fwd.ns_client, check=False)


PING_SCRIPT = r"""
import os, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
dst, n, ok = sys.argv[1], int(sys.argv[2]), 0
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); sock.settimeout(1)
for seq in range(n):
    body = struct.pack("!HH", os.getpid() & 0xffff, seq) + b"vgw-ping" * 4
    pkt = struct.pack("!BBH", 8, 0, 0) + body
    sock.sendto(struct.pack("!BBH", 8, 0, csum(pkt)) + body, (dst, 0))
    try:
        while True:
            data, src = sock.recvfrom(2048)
            ihl = (data[0] & 15) * 4
            icmp = data[ihl:]
            if src[0] == dst and icmp[0] == 0 and icmp[4:] == body and csum(icmp) == 0:
                ok += 1; break
    except socket.timeout:
        pass
print(ok)
"""


def test_ping_vip_and_forwarder_address(fwd: Topology) -> None:
    """ICMP echo to the VIP and to the forwarder's own address is answered (by the control thread)."""
    script = fwd.workdir / "ping.py"
    script.write_text(PING_SCRIPT)
    for dst in (VIP, "203.0.113.1"):
        r = fwd.client(sys.executable, str(script), dst, "3")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "3", (dst, r.stdout, r.stderr)
    # not ours: no reply, counted
    r = fwd.client(sys.executable, str(script), "192.0.2.99", "1")
    assert r.stdout.strip() == "0"
    stats = asyncio.run(_stats(fwd.forwarder.socket))  # type: ignore[union-attr]
    assert stats["counters"]["ctl_icmp_echo_replies"] >= 6


def test_sigterm_stops_cleanly(fwd: Topology) -> None:
    assert fwd.forwarder is not None
    f = fwd.forwarder
    rundir = Path(f"/var/run/dpdk/{f.prefix}")
    assert rundir.exists()
    t0 = time.monotonic()
    os.kill(f.pid, signal.SIGTERM)
    assert f.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert not f.socket.exists()
    assert not rundir.exists()
    fwd.forwarder = None
    assert run("true", ns=fwd.ns_fwd).returncode == 0


def test_single_arm(tmp_path: Path) -> None:
    """One port for both directions: client, forwarder and backends on one bridge."""
    topo = Topology(tmp_path / "single", single_arm=True)
    try:
        topo.build()
        topo.start_backends()
        # a static route through a gateway: 198.18.5.0/24 via backend 0, which owns 198.18.5.1
        run("ip", "addr", "add", "198.18.5.1/32", "dev", "lo", ns=topo.ns_backend(0))
        fwd = topo.start_forwarder(workers=1, extra=["--route", "198.18.5.0/24,198.18.0.11,ext"])
        routed = f"service routed tcp {VIP} 81 wrr\nlip routed {LIP}\nbackend routed 198.18.5.1 80 1 active\nend\n"
        asyncio.run(_apply(fwd.socket, config_doc(1).replace("end\n", routed)))
        r = topo.client("curl", "-sS", "--max-time", "5", f"http://{VIP}:81/id")
        assert r.returncode == 0 and r.stdout == "be0", (r.stdout, r.stderr)
        result = http_requests(topo, 60)
        assert result["nerrors"] == 0, result
        counts = result["counts"]
        assert isinstance(counts, dict) and set(counts) == {"be0", "be1", "be2"}
        for i in range(3):
            assert {e["peer"] for e in topo.backend_log(i)} == {LIP}
    finally:
        with contextlib.suppress(Exception):
            topo.kill_forwarder()
        topo.close()
