"""vgw-fwd restarts with a million connections (issue #16, docs/benchmarks.md "Forwarder restarts").

One forwarder (1 worker, single-arm on a ``net_pcap`` vdev, TX dropped) reads a capture of 1,000,000
TCP handshakes (a SYN, then the client's ACK, for each: established connections) at start, so it
holds 1M established connections in its table, which lives in a file (``--conn-state DIR`` under
/dev/shm: tmpfs, as the default picks without hugepages). Then it is stopped and a new process is
started on the same state; the new one reads a capture of 10,000 data segments of existing
connections, which it can only forward if their connections came back. Cases:

* ``fwd_restart_kill9``: SIGKILL (a crash): the index is rebuilt from the records;
* ``fwd_restart_sigterm``: SIGTERM (a planned restart or upgrade): the index is trusted;
* ``fwd_restart_off``: ``--conn-state off`` for comparison: the process restart alone, with the
  connections lost (the 10,000 segments meet no connection).

Figures (medians over ``--runs``, default 3): ``gap_ms`` = signal sent -> the new process ready
(workers forwarding): the time the node forwards nothing; ``start_to_ready_ms`` = the new process
alone; ``attach_ms`` = the core's share (map, check, rebuild, remap, re-apply the saved
configuration), from its STATS; ``restored``; ``sample_forwarded`` of 10,000. Prints one JSON
object per case, then a table. Needs root and DPDK; about 1 minute per run on a 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files
from vgw.fwdctl import FwdClient

VIP = "192.0.2.10"
LIPS = [f"198.18.0.{100 + i}" for i in range(4)]
BACKENDS = [f"198.18.1.{1 + i}" for i in range(8)]
PORTS_PER_CLIENT = 62500
SAMPLE = 10000


def ip_bytes(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ip_csum(hdr: bytes) -> int:
    s: int = sum(struct.unpack("!10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def client_of(i: int) -> tuple[bytes, int]:
    """Client address and port of connection i (203.0.113.0/24 and 198.51.100.0/24)."""
    n = i // PORTS_PER_CLIENT
    net = "203.0.113" if n < 200 else "198.51.100"
    return ip_bytes(f"{net}.{n % 200 + 1}"), 1024 + i % PORTS_PER_CLIENT


def write_pcap(path: Path, conns: list[int], flag_sets: list[int]) -> None:
    """Frames for connection indexes conns, for each TCP flag set in turn (all of the first, then
    all of the second...). The TCP checksum is left zero: the forwarder runs with
    --no-sw-l4-csum (the IP header checksum is right and checked)."""
    eth = bytes.fromhex("0200000000aa0200000000070800")  # dst, src, IPv4
    vip = ip_bytes(VIP)
    iph: dict[bytes, bytes] = {}
    rec = struct.Struct("<IIII")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        buf = bytearray()
        for flags in flag_sets:
            for i in conns:
                src, sport = client_of(i)
                h = iph.get(src)
                if h is None:
                    raw = bytes.fromhex("45000028000000004006") + b"\0\0" + src + vip
                    h = iph[src] = raw[:10] + struct.pack("!H", ip_csum(raw)) + raw[12:]
                tcp = struct.pack("!HHIIBBHHH", sport, 80, 1000, 5001 if flags & 0x10 else 0, 0x50, flags, 65535, 0, 0)
                buf += rec.pack(0, 0, 54, 54) + eth + h + tcp
                if len(buf) > 1 << 22:
                    f.write(buf)
                    buf.clear()
        f.write(buf)


def config_text() -> str:
    lines = ["vgw-config 1", "generation 1",
             f"service web tcp {VIP} 80 maglev timeout.tcp_established=3600 timeout.tcp_syn_recv=600"]  # fmt: skip
    lines += [f"lip web {lip}" for lip in LIPS]
    lines += [f"backend web {b} 80 1 active" for b in BACKENDS]
    return "\n".join([*lines, "end", ""])


async def _stats(sock: Path) -> dict[str, Any]:
    c = FwdClient(str(sock), timeout_s=10)
    try:
        return dict(await c.stats())
    finally:
        await c.close()


class Fwd:
    def __init__(self, work: Path, rx: Path, state: Path, extra: list[str], capacity: int) -> None:
        self.prefix = f"vgwrb{secrets.token_hex(4)}"
        self.sock = work / f"{self.prefix}.sock"
        self.log = work / f"{self.prefix}.log"
        ncpu = os.cpu_count() or 1
        neigh = [a for i, b in enumerate(BACKENDS) for a in ("--neigh", f"{b},02:00:00:00:01:{i:02x},ext")]
        cmd = [
            str(FWD_BIN), "--no-huge", "-m", "512", "--file-prefix", self.prefix, "--lcores", f"0@0,1@{ncpu - 1}",
            "--no-pci", "--log-level", "*:error", "--vdev", f"net_pcap0,rx_pcap={rx},tx_pcap=/dev/null", "--",
            "--single-arm", "--ext", "net_pcap0,198.18.0.1/16", "--workers", "1", "--socket", str(self.sock),
            "--conn-capacity", str(capacity), "--no-sw-l4-csum", "--conn-state", str(state), *neigh, *extra,
        ]  # fmt: skip
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        deadline = self.t0 + 60
        while "vgw-fwd ready" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"vgw-fwd did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.001)
        self.ready = time.monotonic()

    def stats(self) -> dict[str, Any]:
        return asyncio.run(_stats(self.sock))

    def wait(self, what: str, cond: Any, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.stats()
            if cond(st):
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} in {timeout_s} s: {json.dumps(st['counters'])[:1500]}")
            time.sleep(0.2)

    def stop(self, sig: int) -> float:
        """Signals the process group; returns the monotonic time the signal was sent."""
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        cleanup_dpdk_files(self.prefix)
        return t


def one_case(work: Path, load: Path, sample: Path, n: int, sig: int, off: bool) -> dict[str, Any]:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    cap = n * 3 // 2  # below 3/4 full: no table pressure
    first = Fwd(work, load, state, ["--apply", str(work / "state.conf")], cap)
    try:
        first.wait("connections", lambda s: s["counters"]["conn_active"] >= n and s["counters"]["rx"] >= 2 * n)
    except BaseException:
        first.stop(signal.SIGKILL)
        raise
    t_sig = first.stop(sig)
    # Off: the configuration from --apply (nothing is saved), so the sample meets no connection.
    second = Fwd(work, sample, state, ["--conn-state", "off", "--apply", str(work / "state.conf")] if off else [], cap)
    try:
        st = second.wait("sample processed", lambda s: s["counters"]["rx"] >= SAMPLE, timeout_s=60)
    finally:
        second.stop(signal.SIGTERM)
    shutil.rmtree(state, ignore_errors=True)
    cs = st["conn_state"]
    return {
        "gap_ms": (second.ready - t_sig) * 1000,
        "start_to_ready_ms": (second.ready - second.t0) * 1000,
        "stop_ms": (second.t0 - t_sig) * 1000,
        "attach_ms": float(cs.get("attach_ms", 0.0)),
        "restored": int(cs.get("restored", 0)),
        "index_rebuilt": int(cs.get("index_rebuilt", 0)),
        "sample_forwarded": int(st["counters"]["fwd_inbound"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--conns", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 connections, 1 run")
    args = ap.parse_args()
    if os.geteuid() != 0 or not FWD_BIN.exists():
        print("# skipped: needs root and dataplane/build/vgw-fwd", flush=True)
        return 0
    n, runs = (100_000, 1) if args.quick else (args.conns, args.runs)
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    cases = [("fwd_restart_kill9", signal.SIGKILL, False), ("fwd_restart_sigterm", signal.SIGTERM, False),
             ("fwd_restart_off", signal.SIGTERM, True)]  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="vgw-restartbench-", dir=base) as tmp:
        work = Path(tmp)
        load, sample = work / "load.pcap", work / "sample.pcap"
        t = time.monotonic()
        write_pcap(load, list(range(n)), [0x02, 0x10])
        write_pcap(sample, list(range(0, n, max(1, n // SAMPLE)))[:SAMPLE], [0x18])
        (work / "state.conf").write_text(config_text())
        print(f"# captures of {n} handshakes written in {time.monotonic() - t:.1f} s", flush=True)
        for r in range(runs):
            for name, sig, off in cases:
                res = one_case(work, load, sample, n, sig, off)
                results[name].append(res)
                print(f"# run {r + 1}/{runs} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()), flush=True)
    rows: list[dict[str, Any]] = []
    for name, _sig, _off in cases:
        rs = results[name]

        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return round(statistics.median(float(x[key]) for x in rs), 1)

        rec = {"case": name, "conns": n, "gap_ms": med("gap_ms"), "start_to_ready_ms": med("start_to_ready_ms"),
               "stop_ms": med("stop_ms"), "attach_ms": med("attach_ms"), "restored": int(med("restored")),
               "sample_forwarded": int(med("sample_forwarded")), "sample": SAMPLE, "runs": len(rs),
               "runs_gap_ms": [round(x["gap_ms"], 1) for x in rs],
               "pmd": "net_pcap, 1 worker, --no-huge, state on tmpfs"}  # fmt: skip
        print(json.dumps(rec), flush=True)
        rows.append(rec)
    print(f"\n{'case':<22} {'gap ms':>8} {'start ms':>9} {'attach ms':>10} {'restored':>9} {'sample fwd':>11}")
    for row in rows:
        print(f"{row['case']:<22} {row['gap_ms']:>8} {row['start_to_ready_ms']:>9} {row['attach_ms']:>10} "
              f"{row['restored']:>9} {row['sample_forwarded']:>11}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
