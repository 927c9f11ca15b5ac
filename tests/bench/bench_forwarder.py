"""vgw-fwd benchmark (issue #4, docs/benchmarks.md "Forwarder").

(a) ``mpps``: packets per second through the whole forwarder (DPDK RX, the core's FULLNAT path,
    neighbour lookup, L2 rewrite, TX) with 1 and 2 workers, single-arm on a ``net_pcap`` vdev that
    replays an in-memory capture forever (``infinite_rx``) and drops on TX: 64-byte UDP packets of
    4096 flows per worker to a Maglev UDP service (the first pass creates the connections, the rest
    hit them). Figure: Mpps per worker (median of 3 windows of 2 s after 1 s of warm-up).
(b) ``http``: short HTTP connections through the VIP on the namespace lab (client -> forwarder
    namespace -> 3 nginx backends), measured with wrk from the client namespace: ``cps`` with
    ``Connection: close`` (one TCP connection per request), ``rps`` with keep-alive. Side by side in
    the same run on the same links: vgw-fwd (af_packet, 1 worker), Linux nftables DNAT+SNAT, HAProxy
    in TCP mode, and direct to one backend through plain kernel routing (the ceiling). Median of 3
    runs of 2 s per figure; ratio = figure / the direct figure.

Prints one JSON object per case, then a table. Needs root, DPDK and the lab tools; bounded in time
(about two minutes). ``--quick`` does one run per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.forwarder.fwdproc import stop_session
from tests.forwarder.topology import (
    BACKEND_IPS,
    EXT_IP,
    FWD_BIN,
    INT_IP,
    LIP,
    VIP,
    Topology,
    cleanup_dpdk_files,
    have_prereqs,
    run,
)
from vgw.fwdctl import FwdClient

RESULTS: list[dict[str, object]] = []


def emit(rec: dict[str, object]) -> None:
    RESULTS.append(rec)
    print(json.dumps(rec), flush=True)


async def fwd_stats(sock: Path) -> dict[str, object]:
    c = FwdClient(str(sock), timeout_s=5)
    try:
        return await c.stats()
    finally:
        await c.close()


# --- (a) Mpps through the forwarder ----------------------------------------------------------------


def make_pcap(path: Path, flows: int, base: int) -> None:
    from scapy.all import IP, UDP, Ether, Raw, wrpcap

    pkts = []
    for i in range(flows):
        src = f"203.0.{113 + (base + i) // 65536 % 2}.{(base + i) // 256 % 256}"
        pkt = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src=f"{src.rsplit('.', 1)[0]}.{(base + i) % 254 + 1}", dst=VIP, ttl=64)
            / UDP(sport=1024 + (base + i) % 60000, dport=53)
            / Raw(b"\x00" * 18)
        )
        pkts.append(pkt)
    wrpcap(str(path), pkts)


def mpps_case(workdir: Path, workers: int, windows: int) -> None:
    pcaps = []
    for w in range(workers):
        p = workdir / f"udp{w}.pcap"
        make_pcap(p, 4096, w * 4096)
        pcaps.append(p)
    doc = workdir / "mpps.conf"
    lines = ["vgw-config 1", "generation 1", f"service dns udp {VIP} 53 maglev", f"lip dns {LIP}"]
    lines += [f"backend dns {ip} 53 100 active" for ip in BACKEND_IPS]
    doc.write_text("\n".join([*lines, "end", ""]))
    prefix = f"vgwbench{os.getpid()}{workers}"
    sock = workdir / f"mpps{workers}.sock"
    ncpu = os.cpu_count() or 1
    # workers on the last CPUs, the (mostly sleeping) control thread shares the first
    lcores = ",".join([f"0@{0}"] + [f"{i + 1}@{(ncpu - workers + i) % ncpu}" for i in range(workers)])
    vdev = "net_pcap0," + ",".join(f"rx_pcap={p}" for p in pcaps) + ",infinite_rx=1"
    neigh = [a for ip in BACKEND_IPS for a in ("--neigh", f"{ip},02:00:00:00:01:0{BACKEND_IPS.index(ip)},ext")]
    cmd = [
        str(FWD_BIN), "--no-huge", "-m", "512", "--file-prefix", prefix, "--lcores", lcores, "--no-pci",
        "--log-level", "*:error", "--vdev", vdev, "--",
        "--single-arm", "--ext", "net_pcap0,198.18.0.1/16", "--workers", str(workers), "--socket", str(sock),
        "--apply", str(doc), "--conn-capacity", "65536", *neigh,
    ]  # fmt: skip
    log = workdir / f"mpps{workers}.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 20
        while "vgw-fwd ready" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vgw-fwd (mpps) did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(1.0)
        rates = []
        for _ in range(windows):
            s0 = asyncio.run(fwd_stats(sock))
            t0 = time.monotonic()
            time.sleep(2.0)
            s1 = asyncio.run(fwd_stats(sock))
            t1 = time.monotonic()
            c0, c1 = s0["counters"], s1["counters"]  # type: ignore[index]
            rates.append((c1["fwd_inbound"] - c0["fwd_inbound"]) / (t1 - t0))  # type: ignore[index]
            drops = c1["drop"] - c0["drop"]  # type: ignore[index]
            if drops:
                raise RuntimeError(f"mpps case dropped {drops} packets: {json.dumps(c1)}")
        total = statistics.median(rates) / 1e6
        emit(
            {
                "case": f"mpps_udp64_{workers}w",
                "workers": workers,
                "mpps_total": round(total, 3),
                "mpps_per_worker": round(total / workers, 3),
                "ns_per_pkt_per_worker": round(1e3 / (total / workers), 1),
                "runs": windows,
                "pmd": "net_pcap infinite_rx -> tx drop",
            }
        )
    finally:
        stop_session(proc)
        cleanup_dpdk_files(prefix)


# --- (b) HTTP through the VIP -------------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{ listen 80 reuseport backlog=4096; location / {{ return 200 "{name}\\n"; }} }}
}}
"""

HAPROXY_CONF = """
global
    maxconn 8000
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend vip
    bind {vip}:80
    default_backend web
backend web
    balance roundrobin
    source {lip}
{servers}
"""


def start_nginx(topo: Topology) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for i in range(topo.nbackends):
        d = topo.workdir / f"nginx{i}"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=d, name=f"be{i}"))
        # backends drop TIME_WAIT state instead of keeping 60 s of it: a benchmark sending
        # thousands of connections per second from one client would otherwise collide on tuples
        run("sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0", ns=topo.ns_backend(i))
        topo.procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", topo.ns_backend(i), nginx, "-p", str(d), "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    deadline = time.monotonic() + 10
    for i in range(topo.nbackends):
        while run("ss", "-ltnH", "sport = :80", ns=topo.ns_backend(i)).stdout.strip() == "":
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start")
            time.sleep(0.05)


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def wrk(topo: Topology, url: str, close: bool, seconds: int, conns: int = 32) -> tuple[float, int]:
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "2s"]
    if close:
        args += ["-H", "Connection: close"]
    r = topo.client(*args, url, timeout=seconds + 30)
    m = WRK_RPS.search(r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    errors = 0
    em = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", r.stdout)
    if em:
        errors += sum(int(x) for x in em.groups())
    nm = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    if nm:
        errors += int(nm.group(1))
    return float(m.group(1)), errors


def kernel_router(topo: Topology, on: bool) -> None:
    ns = topo.ns_fwd
    verb = "add" if on else "del"
    run("ip", "addr", verb, f"{EXT_IP}/24", "dev", topo.if_ext, ns=ns, check=on)
    run("ip", "addr", verb, f"{INT_IP}/24", "dev", topo.if_int, ns=ns, check=on)
    run("sysctl", "-qw", f"net.ipv4.ip_forward={1 if on else 0}", ns=ns)


def measure(topo: Topology, mode: str, url: str, runs: int, seconds: int) -> None:
    wrk(topo, url, True, 1)  # warm-up (ARP, caches)
    for metric, close in (("cps", True), ("rps", False)):
        vals, errs = [], 0
        for _ in range(runs):
            v, e = wrk(topo, url, close, seconds)
            vals.append(v)
            errs += e
        emit(
            {
                "case": f"http_{metric}_{mode}",
                "mode": mode,
                f"{metric}_per_s": round(statistics.median(vals)),
                "runs": runs,
                "seconds": seconds,
                "errors": errs,
                "samples": [round(v) for v in vals],
            }
        )


NFT_RULES = """
table ip vgwbench {{
    chain pre {{ type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} tcp dport 80 dnat to numgen inc mod 3 map {{ 0 : {b0}, 1 : {b1}, 2 : {b2} }}
    }}
    chain post {{ type nat hook postrouting priority srcnat; policy accept;
        oifname "{ifc}" ip daddr 198.18.0.0/24 snat to {lip}
    }}
}}
"""


def lab(workdir: Path, mode: str) -> Topology:
    """A fresh lab per mode: no TIME_WAIT sockets, conntrack entries or neighbour entries of one
    mode can slow down the next (they did: client-side TIME_WAIT from the kernel modes cut the
    next mode's connection rate by an order of magnitude)."""
    topo = Topology(workdir / f"lab-{mode}")
    topo.build()
    start_nginx(topo)
    # load-generator tuning: when wrk closes first (it does with some LBs), tens of thousands of
    # client TIME_WAIT sockets towards one VIP:port make connect() crawl (a third HAProxy run fell
    # to 277 connections/s); reuse them as load generators do, and use the whole port range
    run("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", ns=topo.ns_client)
    run("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", ns=topo.ns_client)
    return topo


def mode_direct(topo: Topology, runs: int, seconds: int) -> None:
    # client -> kernel router -> one backend (no load balancer): the ceiling
    kernel_router(topo, True)
    run("ip", "route", "add", "198.18.0.0/24", "via", EXT_IP, ns=topo.ns_client)
    measure(topo, "direct", f"http://{BACKEND_IPS[0]}/", runs, seconds)


def mode_nftables(topo: Topology, runs: int, seconds: int) -> None:
    # nftables DNAT (round robin over 3 backends) + SNAT to the LIP
    kernel_router(topo, True)
    run("ip", "addr", "add", f"{LIP}/32", "dev", topo.if_int, ns=topo.ns_fwd)
    conf = topo.workdir / "nft.conf"
    conf.write_text(
        NFT_RULES.format(vip=VIP, b0=BACKEND_IPS[0], b1=BACKEND_IPS[1], b2=BACKEND_IPS[2], ifc=topo.if_int, lip=LIP)
    )
    run("nft", "-f", str(conf), ns=topo.ns_fwd)
    measure(topo, "nftables", f"http://{VIP}/", runs, seconds)


def mode_haproxy(topo: Topology, runs: int, seconds: int) -> None:
    # HAProxy, TCP mode, on the VIP (a local address of the LB namespace), source = LIP
    kernel_router(topo, True)
    run("ip", "addr", "add", f"{LIP}/32", "dev", topo.if_int, ns=topo.ns_fwd)
    run("ip", "addr", "add", f"{VIP}/32", "dev", "lo", ns=topo.ns_fwd)
    servers = "\n".join(f"    server be{i} {ip}:80" for i, ip in enumerate(BACKEND_IPS))
    cfg = topo.workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CONF.format(vip=VIP, lip=LIP, servers=servers))
    hlog = topo.workdir / "haproxy.log"
    hap = subprocess.Popen(
        ["ip", "netns", "exec", topo.ns_fwd, "haproxy", "-db", "-f", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=open(hlog, "w"),  # noqa: SIM115
        start_new_session=True,
    )
    topo.procs.append(hap)
    deadline = time.monotonic() + 10
    while run("ss", "-ltnH", "sport = :80", ns=topo.ns_fwd).stdout.strip() == "":
        if hap.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"haproxy did not start: {hlog.read_text()}")
        time.sleep(0.05)
    measure(topo, "haproxy", f"http://{VIP}/", runs, seconds)


def mode_vgw(topo: Topology, runs: int, seconds: int) -> None:
    # vgw-fwd on af_packet, 1 worker; the kernel of the LB namespace has no address and no forwarding
    fwd = topo.start_forwarder(workers=1, extra=["--conn-capacity", "262144"])
    lines = ["vgw-config 1", "generation 1", f"service web tcp {VIP} 80 maglev toa=on", f"lip web {LIP}"]
    lines += [f"backend web {ip} 80 100 active" for ip in BACKEND_IPS]

    async def apply() -> None:
        c = FwdClient(str(fwd.socket))
        await c.apply("\n".join([*lines, "end", ""]))
        await c.close()

    asyncio.run(apply())
    measure(topo, "vgw", f"http://{VIP}/", runs, seconds)
    st = asyncio.run(fwd_stats(fwd.socket))
    drops = {k: v for k, v in st["counters"].items() if k.startswith("drop_") and v}  # type: ignore[attr-defined]
    print(f"# vgw-fwd drops during the run: {drops or 'none'}", flush=True)


def http_cases(workdir: Path, runs: int, seconds: int) -> None:
    for mode, fn in (
        ("direct", mode_direct),
        ("vgw", mode_vgw),
        ("nftables", mode_nftables),
        ("haproxy", mode_haproxy),
    ):
        topo = lab(workdir, mode)
        try:
            fn(topo, runs, seconds)
        finally:
            with contextlib.suppress(Exception):
                topo.kill_forwarder()
            topo.close()


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{model}, {os.cpu_count()} vCPUs, Linux {platform.release()}, load average at the end {load}"


def table() -> None:
    print()
    print(f"# machine: {machine()}")
    print(f"{'case':<26} {'figure':>14}  {'unit':<22} {'ratio':>7}")
    direct = {
        m: next((r[f"{m}_per_s"] for r in RESULTS if r["case"] == f"http_{m}_direct"), None) for m in ("cps", "rps")
    }
    for r in RESULTS:
        case = str(r["case"])
        if case.startswith("mpps"):
            print(f"{case:<26} {r['mpps_per_worker']:>14}  {'Mpps per worker':<22} {'':>7}")
            continue
        metric = "cps" if "_cps_" in case else "rps"
        v = r[f"{metric}_per_s"]
        base = direct[metric]
        ratio = f"{float(v) / float(base):.2f}" if base else ""  # type: ignore[arg-type]
        unit = "connections/s" if metric == "cps" else "requests/s (keep-alive)"
        print(f"{case:<26} {v:>14}  {unit:<22} {ratio:>7}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run per figure")
    ap.add_argument("--only", choices=["mpps", "http"], help="run one part")
    args = ap.parse_args()
    why = have_prereqs()
    if why is not None or not shutil.which("wrk"):
        print(f"# forwarder benchmark skipped: {why or 'wrk not installed'}")
        return 0
    runs = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="vgw-bench-fwd-") as tmp:
        work = Path(tmp)
        if args.only in (None, "mpps"):
            for w in (1, 2):
                mpps_case(work, w, runs)
        if args.only in (None, "http"):
            http_cases(work, runs, 2)
    table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
