"""Hitless restarts of vgw-fwd (issue #16): real DPDK on af_packet veths, a long-lived TCP
connection streaming both ways through the VIP while the forwarder is killed with SIGKILL and
started again, and while it is replaced by a copy of its binary at the same path (an upgrade).

The connection must continue with every byte intact (the client checks every echoed block, the
server every sent one); the restarted forwarder re-attaches its connection tables and re-applies
the configuration it saved, so it forwards before anyone applies anything. A file of another
layout, or a different worker count, is refused with a clear message and exit code 2, and the
state survives the refusal untouched; --conn-state-discard then starts empty. The gap (the time
the client received nothing, and kill -> ready of the forwarder) is printed.

State lives in a directory of this test under /dev/shm (--conn-state DIR), removed at the end
whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.fwdproc import until
from tests.forwarder.topology import (
    BACKEND_IPS,
    EXT_IP,
    FWD_BIN,
    INT_IP,
    LIP,
    VIP,
    Forwarder,
    Topology,
    cleanup_dpdk_files,
)
from vgw.fwdctl import FwdClient

pytestmark = [needs_lab, pytest.mark.integration]

ECHO_PORT = 9000
BLOCK = 1024

# A server in backend 0's namespace: echoes every block back, and checks that each one carries the
# pattern of its sequence number (so a byte lost, duplicated or reordered on the way in is seen).
ECHO_SERVER = r"""
import socket, struct, sys, threading
BLOCK = int(sys.argv[1])
def pattern(seq):
    return struct.pack("!I", seq) + bytes((seq * 31 + i) & 0xff for i in range(4, BLOCK))
def serve(c):
    expect, buf, bad = 0, b"", 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        buf += d
        while len(buf) >= BLOCK:
            blk, buf = buf[:BLOCK], buf[BLOCK:]
            if blk != pattern(expect):
                bad += 1
            c.sendall(blk)
            expect += 1
    open(sys.argv[2], "a").write("%d %d\n" % (expect, bad))
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3]))); s.listen(16)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# The client: one connection, a block every 10 ms; checks every echoed block and notes when it
# arrived; writes progress (blocks echoed) to a file; stops sending when the stop file appears,
# waits for the last echo and prints a JSON summary.
ECHO_CLIENT = r"""
import json, os, socket, struct, sys, time
host, port, BLOCK, progress, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def pattern(seq):
    return struct.pack("!I", seq) + bytes((seq * 31 + i) & 0xff for i in range(4, BLOCK))
s = socket.create_connection((host, port), timeout=30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setblocking(False)
sent, got, bad, buf, arrivals = 0, 0, 0, b"", []
out = b""
next_send = time.monotonic()
stopping = False
deadline = None
while True:
    now = time.monotonic()
    if not stopping and os.path.exists(stop):
        stopping, deadline = True, now + 30
    if not stopping and now >= next_send:
        out += pattern(sent); sent += 1; next_send = now + 0.01
    if out:
        try:
            n = s.send(out); out = out[n:]
        except BlockingIOError:
            pass
    try:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    except BlockingIOError:
        time.sleep(0.002)
    while len(buf) >= BLOCK:
        blk, buf = buf[:BLOCK], buf[BLOCK:]
        if blk != pattern(got):
            bad += 1
        got += 1
        arrivals.append(time.monotonic())
        if got % 10 == 0:
            with open(progress + ".tmp", "w") as f:
                f.write(str(got))
            os.replace(progress + ".tmp", progress)
    if stopping and got == sent and not out:
        break
    if deadline and time.monotonic() > deadline:
        break
s.close()
gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
print(json.dumps({"sent": sent, "echoed": got, "bad": bad, "max_gap_s": max(gaps) if gaps else None}))
"""


@dataclass
class Stream:
    proc: subprocess.Popen[str]
    progress: Path
    stop: Path

    def echoed(self) -> int:
        try:
            return int(self.progress.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def finish(self) -> dict[str, Any]:
        self.stop.write_text("stop")
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return dict(json.loads(out))


def config_doc(generation: int) -> str:
    return "\n".join(
        [
            "vgw-config 1",
            f"generation {generation}",
            f"service echo tcp {VIP} {ECHO_PORT} maglev",
            f"lip echo {LIP}",
            f"backend echo {BACKEND_IPS[0]} {ECHO_PORT} 1 active",
            "end",
            "",
        ]
    )


async def _ctl(sock: Path, what: str, doc: str = "") -> Any:
    c = FwdClient(str(sock), timeout_s=5)
    try:
        return await (c.apply(doc) if what == "apply" else c.stats())
    finally:
        await c.close()


def stats(fwd: Forwarder) -> dict[str, Any]:
    return dict(asyncio.run(_ctl(fwd.socket, "stats")))


@dataclass
class Started:
    fwd: Forwarder | None
    returncode: int | None
    log: str
    ready_s: float  # seconds from the call to the ready line (or to the exit)


def start_fwd(
    lab: Topology, binary: Path, state: Path, extra: list[str] | None = None, workers: int = 2, prefix: str = ""
) -> Started:
    """vgw-fwd in the lab (as Topology.start_forwarder, with a chosen binary and state directory),
    watched every 2 ms so the time to ready is measured finely. A forwarder that exits before it
    is ready is returned with its exit code and log."""
    prefix = prefix or f"vgwr{lab.suffix}{secrets.token_hex(2)}"
    sock = lab.workdir / "fwd.sock"
    log = lab.workdir / f"fwd-{prefix}.log"
    lcores = ",".join(f"{i}@{i % max(1, os.cpu_count() or 1)}" for i in range(workers + 1))
    cmd = [
        "ip", "netns", "exec", lab.ns_fwd, str(binary),
        "--no-huge", "-m", "256", "--file-prefix", prefix, "--lcores", lcores, "--no-pci", "--log-level", "*:notice",
        "--vdev", f"net_af_packet0,iface={lab.if_ext},qpairs={workers}",
        "--vdev", f"net_af_packet1,iface={lab.if_int},qpairs={workers}",
        "--", "--ext", f"net_af_packet0,{EXT_IP}/24", "--int", f"net_af_packet1,{INT_IP}/24",
        "--workers", str(workers), "--socket", str(sock), "--conn-capacity", "65536",
        "--conn-state", str(state), *(extra or []),
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    lab.procs.append(proc)
    lab.prefixes.append(prefix)
    deadline = t0 + 30
    start = log.stat().st_size if log.exists() else 0

    def text() -> str:
        return log.read_text()[start:]

    while "vgw-fwd ready" not in text():
        if proc.poll() is not None:
            if lab.forwarder is None or lab.forwarder.prefix != prefix:  # not another one's files
                cleanup_dpdk_files(prefix)
            return Started(None, proc.returncode, text(), time.monotonic() - t0)
        assert time.monotonic() < deadline, f"vgw-fwd not ready in 30 s:\n{text()[-3000:]}"
        time.sleep(0.002)
    ready = time.monotonic() - t0
    fwd = Forwarder(proc=proc, socket=sock, prefix=prefix, log=log)
    lab.forwarder = fwd
    return Started(fwd, None, text(), ready)


def listening(ns: str, port: int) -> Callable[[], str]:
    def check() -> str:
        cmd = ["ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{port}"]
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()

    return check


@pytest.fixture(scope="module")
def rlab(lab: Topology) -> Iterator[tuple[Topology, Path]]:
    """The lab with an echo server on backend 0 and a state directory of this module's own."""
    state = Path(f"/dev/shm/vgw-test-restart-{lab.suffix}")
    script = lab.workdir / "echo_server.py"
    script.write_text(ECHO_SERVER)
    srv = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns_backend(0), sys.executable, str(script), str(BLOCK),
         str(lab.workdir / "echo_server.log"), str(ECHO_PORT)],
        stdout=subprocess.DEVNULL, stderr=open(lab.workdir / "echo_server.err", "w"), start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    lab.procs.append(srv)
    try:
        until(listening(lab.ns_backend(0), ECHO_PORT), bool, "echo server listening")
        yield lab, state
    finally:
        with contextlib.suppress(Exception):
            lab.kill_forwarder()
        shutil.rmtree(state, ignore_errors=True)


def open_stream(lab: Topology, tag: str) -> Stream:
    script = lab.workdir / "echo_client.py"
    script.write_text(ECHO_CLIENT)
    progress, stop = lab.workdir / f"progress-{tag}", lab.workdir / f"stop-{tag}"
    for p in (progress, stop):
        p.unlink(missing_ok=True)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns_client, sys.executable, str(script), VIP, str(ECHO_PORT), str(BLOCK),
         str(progress), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    lab.procs.append(proc)  # type: ignore[arg-type]
    return Stream(proc, progress, stop)


def restart_through(lab: Topology, state: Path, binary: Path, sig: int, tag: str) -> dict[str, Any]:
    """Streams through a forwarder, stops it with sig, starts binary, checks the stream went on."""
    stream = open_stream(lab, tag)
    try:
        until(stream.echoed, lambda n: n >= 50, "blocks echoed before the restart")
        assert lab.forwarder is not None
        pid = lab.forwarder.pid
        t_kill = time.monotonic()
        lab.kill_forwarder(sig)
        started = start_fwd(lab, binary, state)
        downtime = time.monotonic() - t_kill
        assert started.fwd is not None, started.log
        before = stream.echoed()
        until(stream.echoed, lambda n: n >= before + 100, "blocks echoed after the restart", timeout_s=30)
        st = stats(started.fwd)
        result = stream.finish()
    finally:
        if stream.proc.poll() is None:
            os.killpg(stream.proc.pid, signal.SIGKILL)
            stream.proc.wait()
    cs: dict[str, Any] = st["conn_state"]
    assert cs["reattached"] is True, cs
    assert cs["restored"] >= 1 and cs["invalid"] == 0 and cs["orphaned"] == 0, cs
    assert cs["previous_pid"] != 0 and cs["previous_stop"] == ("crash" if sig == signal.SIGKILL else "clean"), cs
    assert cs["config_restored"] is True, cs  # forwarding before anyone applied anything
    assert st["generation"] == cs["config_generation"] and st["generation"] >= 1, (st["generation"], cs)
    # every block sent came back intact, 100 and more of them after the restart
    assert result["bad"] == 0 and result["echoed"] == result["sent"] and result["sent"] >= before + 100, result
    lines = Path(lab.workdir / "echo_server.log").read_text().split()
    assert lines[-2:] == [str(result["sent"]), "0"], lines  # the server saw every block, intact
    print(
        f"\nrestart ({tag}, pid {pid} -> {started.fwd.pid}): forwarder down {downtime * 1000:.0f} ms "
        f"(start to ready {started.ready_s * 1000:.0f} ms, attach+config {cs['attach_ms']:.1f} ms, "
        f"{cs['restored']} connections back); client saw no data for {result['max_gap_s'] * 1000:.0f} ms "
        f"(TCP retransmission timers included); {result['sent']} blocks of {BLOCK} B intact"
    )
    return cs


def test_kill9_and_upgrade_keep_the_connection(rlab: tuple[Topology, Path]) -> None:
    lab, state = rlab
    lab.kill_forwarder(signal.SIGTERM)  # what an earlier test left running
    shutil.rmtree(state, ignore_errors=True)
    bindir = lab.workdir / "bin"
    bindir.mkdir(exist_ok=True)
    binary = bindir / "vgw-fwd"
    shutil.copy2(FWD_BIN, binary)
    first = start_fwd(lab, binary, state)
    assert first.fwd is not None, first.log
    assert stats(first.fwd)["conn_state"]["reattached"] is False
    assert asyncio.run(_ctl(first.fwd.socket, "apply", config_doc(5))) == 5

    restart_through(lab, state, binary, signal.SIGKILL, "kill9")

    # An upgrade: a new file at the same path (as a package manager installs it), the old process
    # stopped with SIGTERM, the new one started from the path.
    new = bindir / "vgw-fwd.new"
    shutil.copy2(FWD_BIN, new)
    os.replace(new, binary)
    restart_through(lab, state, binary, signal.SIGTERM, "upgrade")

    # The shim's full re-apply after the restart (generation above the restored one) changes
    # nothing for the connections, and the saved configuration follows it.
    assert lab.forwarder is not None
    fwd = lab.forwarder
    assert asyncio.run(_ctl(fwd.socket, "apply", config_doc(6))) == 6
    until(lambda: stats(fwd)["conn_state"]["saved_generation"], lambda g: g == 6, "saved configuration")
    assert "generation 6" in (state / "config").read_text()


def test_a_restart_at_once_waits_for_the_exiting_predecessor(rlab: tuple[Topology, Path]) -> None:
    """A supervisor may start the next forwarder while the killed one is still being torn down (its
    memory and packet rings: tens of ms), holding the EAL's runtime files and the connection
    state's locks: the new one waits for it (it would fail "Cannot allocate memzone list" or find its
    state "in use"). A forwarder that runs is another one with the same file prefix: refused."""
    lab, state = rlab
    lab.kill_forwarder(signal.SIGTERM)  # what an earlier test left running
    shutil.rmtree(state, ignore_errors=True)
    prefix = f"vgwp{lab.suffix}"
    first = start_fwd(lab, FWD_BIN, state, prefix=prefix)
    assert first.fwd is not None, first.log

    second = start_fwd(lab, FWD_BIN, state, prefix=prefix)  # the first one still runs
    assert second.fwd is None and second.returncode == 2, second.log
    assert f"another forwarder (pid {first.fwd.pid}) runs" in second.log and "--file-prefix" in second.log
    assert lab.forwarder is first.fwd and first.fwd.proc.poll() is None  # and it runs on, untouched

    waited = 0
    for _ in range(3):
        old = lab.forwarder
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)  # and start the next at once, not waiting for the exit
        nxt = start_fwd(lab, FWD_BIN, state, prefix=prefix)
        assert nxt.fwd is not None, nxt.log
        old.proc.wait(5)
        if "waiting for the previous forwarder" in nxt.log:
            waited += 1
            assert f"the previous forwarder (pid {old.pid}) has exited after" in nxt.log, nxt.log
        assert stats(nxt.fwd)["conn_state"]["previous_pid"] == old.pid
    print(f"\nrestarted at once 3 times; waited for the exiting predecessor {waited} times")
    lab.kill_forwarder(signal.SIGTERM)


def test_incompatible_state_is_refused(rlab: tuple[Topology, Path]) -> None:
    lab, state = rlab
    lab.kill_forwarder(signal.SIGTERM)  # what an earlier test left running
    shutil.rmtree(state, ignore_errors=True)
    first = start_fwd(lab, FWD_BIN, state)
    assert first.fwd is not None, first.log
    assert asyncio.run(_ctl(first.fwd.socket, "apply", config_doc(1))) == 1
    lab.kill_forwarder(signal.SIGTERM)
    w0 = state / "conn-w0"
    before = w0.read_bytes()[:4096]

    # a different worker count
    r = start_fwd(lab, FWD_BIN, state, workers=1)
    assert r.fwd is None and r.returncode == 2, r.log
    assert "connection state refused" in r.log and "--workers 2" in r.log, r.log

    # a layout this build does not read (as a newer or older vgw-fwd would have written it)
    with open(w0, "r+b") as f:
        f.seek(8)
        f.write((999).to_bytes(4, "little"))
    r = start_fwd(lab, FWD_BIN, state)
    assert r.fwd is None and r.returncode == 2, r.log
    assert "incompatible layout" in r.log and "version 999" in r.log and "--conn-state-discard" in r.log, r.log
    print(f"\nrefused: {next(line for line in r.log.splitlines() if 'refused' in line)}")
    after = w0.read_bytes()[:4096]
    assert after[8:12] == (999).to_bytes(4, "little") and after[12:] == before[12:]  # untouched

    # discarded on purpose: starts with new tables
    r = start_fwd(lab, FWD_BIN, state, extra=["--conn-state-discard"])
    assert r.fwd is not None, r.log
    cs = stats(r.fwd)["conn_state"]
    assert cs["reattached"] is False and cs["config_restored"] is False, cs
    assert "discarded" in r.log
    lab.kill_forwarder(signal.SIGTERM)

    # off: no files at all
    shutil.rmtree(state, ignore_errors=True)
    r = start_fwd(lab, FWD_BIN, Path("/nonexistent"), extra=["--conn-state", "off"])
    assert r.fwd is not None, r.log
    assert stats(r.fwd)["conn_state"] == {"enabled": False}
    lab.kill_forwarder(signal.SIGTERM)
