"""A one-machine lab for vgw-fwd: network namespaces, veths, a bridge, HTTP backends.

    client ns                 forwarder ns (ip_forward=0)          switch ns           backend ns x3
    203.0.113.2 --veth--> ext: net_af_packet0 (203.0.113.1)
                          int: net_af_packet1 (198.18.0.1) --veth-- bridge --veth-- 198.18.0.11..13:80

The VIP is 192.0.2.10:80 (the client routes 192.0.2.0/24 via 203.0.113.1), the LIP 198.18.0.100.
The forwarder's addresses exist only inside DPDK; the kernel in its namespace has none, so it
neither answers ARP for them nor forwards anything. Every name carries a random suffix, so runs can
be parallel, and :meth:`Topology.close` removes everything it made, also after a failure. The
benchmark (tests/bench/bench_forwarder.py) reuses this module and adds kernel modes (nftables
DNAT+SNAT, HAProxy, plain routing) on the same links.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FWD_BIN = REPO / "dataplane" / "build" / "vgw-fwd"

CLIENT_IP = "203.0.113.2"
SINGLE_ARM_CLIENT_IP = "198.18.0.50"  # single-arm: the client shares the backends' subnet
EXT_IP = "203.0.113.1"
INT_IP = "198.18.0.1"
VIP = "192.0.2.10"
LIP = "198.18.0.100"
BACKEND_IPS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
PORT = 80


def run(*args: str, check: bool = True, ns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def have_prereqs() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not FWD_BIN.exists():
        return f"{FWD_BIN} not built (DPDK dev files missing?)"
    for tool in ("ip", "ethtool", "tcpdump"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    return None


def backend_server_script() -> str:
    """A threaded HTTP server: GET /id answers the backend's name, /slow?s=N holds the connection
    open while streaming one line per 100 ms; every request is logged as JSON with the peer."""
    return r"""
import http.server, json, socketserver, sys, time
name, logf = sys.argv[1], open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        peer, port = self.client_address[:2]
        logf.write(json.dumps({"peer": peer, "port": port, "path": self.path}) + "\n")
        if self.path.startswith("/slow"):
            secs = float(self.path.split("s=")[1]) if "s=" in self.path else 5
            self.send_response(200); self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
            end = time.time() + secs
            while time.time() < end:
                line = (name + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line)); self.wfile.flush(); time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n"); return
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close"); self.end_headers(); self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
S(("0.0.0.0", 80), H).serve_forever()
"""


@dataclass
class Forwarder:
    proc: subprocess.Popen[bytes]
    socket: Path
    prefix: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Topology:
    workdir: Path
    nbackends: int = 3
    single_arm: bool = False  # one forwarder port on the bridge; client, forwarder, backends share it
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    forwarder: Forwarder | None = None
    prefixes: list[str] = field(default_factory=list)  # every EAL file prefix started: close() cleans them all

    # names -------------------------------------------------------------------------------------
    @property
    def ns_client(self) -> str:
        return f"vgwc-{self.suffix}"

    @property
    def ns_fwd(self) -> str:
        return f"vgwf-{self.suffix}"

    @property
    def ns_switch(self) -> str:
        return f"vgws-{self.suffix}"

    def ns_backend(self, i: int) -> str:
        return f"vgwb{i}-{self.suffix}"

    @property
    def if_ext(self) -> str:  # in the forwarder ns
        return f"ve{self.suffix}f"

    @property
    def if_client(self) -> str:
        return f"ve{self.suffix}c"

    @property
    def if_int(self) -> str:  # in the forwarder ns
        return f"vi{self.suffix}f"

    @property
    def if_int_sw(self) -> str:
        return f"vi{self.suffix}s"

    def if_backend(self, i: int) -> str:
        return f"vb{i}{self.suffix}b"

    def if_backend_sw(self, i: int) -> str:
        return f"vb{i}{self.suffix}s"

    # build -------------------------------------------------------------------------------------
    def _ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)

    def _veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        run("ip", "link", "set", a, "netns", ns_a)
        run("ip", "link", "set", b, "netns", ns_b)
        for ifc, ns in ((a, ns_a), (b, ns_b)):
            # The kernels at both ends must put complete checksums and MTU-sized frames on the
            # wire: af_packet hands the forwarder exactly what the peer sent.
            run("ethtool", "-K", ifc, "tx", "off", "tso", "off", "gso", "off", "gro", "off", check=False, ns=ns)
            run("sysctl", "-qw", f"net.ipv6.conf.{ifc}.disable_ipv6=1", check=False, ns=ns)
            run("ip", "link", "set", ifc, "up", ns=ns)

    def build(self) -> Topology:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ns(self.ns_client)
        self._ns(self.ns_fwd)
        self._ns(self.ns_switch)
        for i in range(self.nbackends):
            self._ns(self.ns_backend(i))
        run("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=self.ns_fwd)
        run("ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", ns=self.ns_switch)
        run("ip", "link", "set", "br0", "up", ns=self.ns_switch)
        if self.single_arm:
            # client -- bridge -- forwarder's only port (INT_IP), backends on the same bridge
            self._veth(self.if_client, self.ns_client, self.if_ext, self.ns_switch)
            run("ip", "link", "set", self.if_ext, "master", "br0", ns=self.ns_switch)
            self._veth(self.if_int, self.ns_fwd, self.if_int_sw, self.ns_switch)
            run("ip", "link", "set", self.if_int_sw, "master", "br0", ns=self.ns_switch)
            run("ip", "addr", "add", f"{SINGLE_ARM_CLIENT_IP}/24", "dev", self.if_client, ns=self.ns_client)
            run("ip", "route", "add", "192.0.2.0/24", "via", INT_IP, ns=self.ns_client)
        else:
            self._veth(self.if_client, self.ns_client, self.if_ext, self.ns_fwd)
            self._veth(self.if_int, self.ns_fwd, self.if_int_sw, self.ns_switch)
            run("ip", "link", "set", self.if_int_sw, "master", "br0", ns=self.ns_switch)
            run("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", self.if_client, ns=self.ns_client)
            run("ip", "route", "add", "192.0.2.0/24", "via", EXT_IP, ns=self.ns_client)
        for i in range(self.nbackends):
            ns = self.ns_backend(i)
            self._veth(self.if_backend(i), ns, self.if_backend_sw(i), self.ns_switch)
            run("ip", "link", "set", self.if_backend_sw(i), "master", "br0", ns=self.ns_switch)
            run("ip", "addr", "add", f"{BACKEND_IPS[i]}/24", "dev", self.if_backend(i), ns=ns)
            run("ip", "route", "add", "default", "via", INT_IP, ns=ns)
        return self

    def start_backends(self) -> None:
        script = self.workdir / "backend.py"
        script.write_text(backend_server_script())
        for i in range(self.nbackends):
            log = self.workdir / f"backend{i}.log"
            log.write_text("")
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.ns_backend(i), sys.executable, str(script), f"be{i}", str(log)],
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.workdir / f"backend{i}.err", "w"),  # noqa: SIM115
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 10
        for i in range(self.nbackends):
            while run("ss", "-ltnH", "sport = :80", ns=self.ns_backend(i)).stdout.strip() == "":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backend {i} did not start")
                time.sleep(0.05)

    def backend_log(self, i: int) -> list[dict[str, object]]:
        path = self.workdir / f"backend{i}.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # forwarder ---------------------------------------------------------------------------------
    def start_forwarder(self, workers: int = 2, extra: list[str] | None = None, wait_s: float = 20) -> Forwarder:
        prefix = f"vgwt{self.suffix}{secrets.token_hex(2)}"
        sock = self.workdir / "fwd.sock"
        log = self.workdir / f"fwd-{prefix}.log"
        lcores = ",".join(f"{i}@{i % max(1, os.cpu_count() or 1)}" for i in range(workers + 1))
        if self.single_arm:
            ports = ["--vdev", f"net_af_packet0,iface={self.if_int},qpairs={workers}"]
            roles = ["--single-arm", "--ext", f"net_af_packet0,{INT_IP}/24"]
        else:
            ports = [
                "--vdev",
                f"net_af_packet0,iface={self.if_ext},qpairs={workers}",
                "--vdev",
                f"net_af_packet1,iface={self.if_int},qpairs={workers}",
            ]
            roles = ["--ext", f"net_af_packet0,{EXT_IP}/24", "--int", f"net_af_packet1,{INT_IP}/24"]
        cmd = [
            "ip", "netns", "exec", self.ns_fwd, str(FWD_BIN),
            "--no-huge", "-m", "256", "--file-prefix", prefix, "--lcores", lcores, "--no-pci",
            "--log-level", "*:notice", *ports, "--", *roles,
            "--workers", str(workers),
            "--socket", str(sock),
            "--conn-capacity", "65536",
            *(extra or []),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        self.procs.append(proc)
        self.prefixes.append(prefix)
        fwd = Forwarder(proc=proc, socket=sock, prefix=prefix, log=log)
        self.forwarder = fwd
        deadline = time.monotonic() + wait_s
        while "vgw-fwd ready" not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"vgw-fwd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vgw-fwd not ready in {wait_s}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        return fwd

    def kill_forwarder(self, sig: int = signal.SIGKILL) -> None:
        fwd = self.forwarder
        if fwd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(fwd.proc.pid, sig)
        try:
            fwd.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(fwd.proc.pid, signal.SIGKILL)
            fwd.proc.wait(timeout=5)
        cleanup_dpdk_files(fwd.prefix)
        self.forwarder = None

    # client ------------------------------------------------------------------------------------
    def client(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(*args, ns=self.ns_client, timeout=timeout, check=False)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for prefix in self.prefixes:
            cleanup_dpdk_files(prefix)
        for ns in reversed(self.namespaces):
            # killing what is left inside (tcpdump, servers started by a test) before deleting
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def cleanup_dpdk_files(prefix: str) -> None:
    """Remove what an EAL with this --file-prefix may leave (runtime dir, hugepage files), and the
    connection state vgw-fwd keeps for that prefix by default (--conn-state auto)."""
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    for base in ("/dev/shm/vgw-fwd", "/dev/hugepages/vgw-fwd"):
        shutil.rmtree(f"{base}/{prefix}", ignore_errors=True)
    hp = Path("/dev/hugepages")
    if hp.is_dir():
        for f in hp.glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                f.unlink()


# the client side: N short HTTP requests, one connection each -------------------------------------

CLIENT_SCRIPT = r"""
import http.client, json, sys, collections, time
host, n = sys.argv[1], int(sys.argv[2])
counts, errors, ports = collections.Counter(), [], []
for i in range(n):
    try:
        c = http.client.HTTPConnection(host, 80, timeout=5)
        c.connect(); ports.append(c.sock.getsockname()[1])
        c.request("GET", "/id"); r = c.getresponse(); body = r.read().decode()
        counts[body if r.status == 200 else f"status {r.status}"] += 1
        c.close()
    except Exception as e:
        errors.append(repr(e))
print(json.dumps({"counts": counts, "errors": errors[:10], "nerrors": len(errors), "ports": ports}))
"""


def http_requests(topo: Topology, n: int, host: str = VIP) -> dict[str, object]:
    script = topo.workdir / "client.py"
    script.write_text(CLIENT_SCRIPT)
    r = topo.client(sys.executable, str(script), host, str(n))
    if r.returncode != 0:
        raise RuntimeError(f"client failed: {r.stderr}")
    return dict(json.loads(r.stdout))
