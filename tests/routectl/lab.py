"""A BGP lab in network namespaces: one BIRD 2 router and N VGW nodes on one L2 segment.

Router namespace ``vr<id>`` holds a bridge with 192.0.2.1/24 and runs BIRD (ECMP ``merge paths``
into its namespace's kernel FIB); node namespace ``vn<i><id>`` holds 192.0.2.(10+i)/24 on a veth
into the bridge. Names carry a per-lab random id, so concurrent runs never collide, and
:meth:`Lab.close` removes everything (BIRD, namespaces, veths) even after a failure.

A dual-stack lab (``ipv6=True``) adds 2001:db8::1/64 to the bridge and 2001:db8::(10+i)/64 to each
node's veth (``nodad``: usable at once), and mirrors the IPv4 routing for IPv6: a BGP session per node
(BIRD protocol ``n<i>v6``, ``ipv6`` channel) and an IPv6 kernel protocol with ECMP.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BIRD = shutil.which("bird") or "/usr/sbin/bird"
BIRDC = shutil.which("birdc") or "/usr/sbin/birdc"
ROUTER_IP = "192.0.2.1"
ROUTER_IP6 = "2001:db8::1"
ROUTER_ASN = 64512
NODE_ASN = 64513


def node_ip(i: int) -> str:
    return f"192.0.2.{10 + i}"


def node_ip6(i: int) -> str:
    """Node ``i``'s IPv6 address in a dual-stack lab (2001:db8::11 for node 1)."""
    return f"2001:db8::{10 + i}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@dataclass
class Lab:
    workdir: Path
    nodes: int = 2
    password: str | None = None
    ipv6: bool = False
    """Dual-stack: IPv6 addresses on the segment and an IPv6 BGP session per node (``n<i>v6``)."""
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    bird: subprocess.Popen[bytes] | None = None

    @property
    def router_ns(self) -> str:
        return f"vr{self.id}"

    def node_ns(self, i: int) -> str:
        return f"vn{i}{self.id}"

    @property
    def bird_sock(self) -> Path:
        return self.workdir / "bird.ctl"

    def start(self) -> Lab:
        if not Path(BIRD).exists():
            raise RuntimeError("BIRD 2 is not installed: run `make setup` (bird2 is in scripts/apt-packages.txt)")
        sweep_stale_labs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        r = self.router_ns
        _ip("netns", "add", r)
        _ip("-n", r, "link", "set", "lo", "up")
        _ip("-n", r, "link", "add", "br0", "type", "bridge")
        _ip("-n", r, "addr", "add", f"{ROUTER_IP}/24", "dev", "br0")
        if self.ipv6:  # nodad: usable at once (no duplicate address detection to wait for)
            _ip("-n", r, "addr", "add", f"{ROUTER_IP6}/64", "dev", "br0", "nodad")
        _ip("-n", r, "link", "set", "br0", "up")
        for i in range(1, self.nodes + 1):
            n, v, p = self.node_ns(i), f"v{self.id}{i}", f"p{self.id}{i}"
            _ip("netns", "add", n)
            _ip("link", "add", v, "type", "veth", "peer", "name", p)
            _ip("link", "set", v, "netns", n)
            _ip("link", "set", p, "netns", r)
            _ip("-n", r, "link", "set", p, "master", "br0")
            _ip("-n", r, "link", "set", p, "up")
            _ip("-n", n, "link", "set", "lo", "up")
            _ip("-n", n, "addr", "add", f"{node_ip(i)}/24", "dev", v)
            if self.ipv6:
                _ip("-n", n, "addr", "add", f"{node_ip6(i)}/64", "dev", v, "nodad")
            _ip("-n", n, "link", "set", v, "up")
        conf = self.workdir / "bird.conf"
        conf.write_text(self.bird_config())
        self.bird = subprocess.Popen(
            ["ip", "netns", "exec", r, BIRD, "-f", "-c", str(conf), "-s", str(self.bird_sock)],
            stdout=open(self.workdir / "bird.log", "wb"),  # noqa: SIM115 - lives as long as BIRD
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.bird.poll() is not None:
                raise RuntimeError(f"BIRD exited: {(self.workdir / 'bird.log').read_text()[-2000:]}")
            if self.bird_sock.exists() and self.birdc("show", "status").returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("BIRD did not start")

    def bird_config(self) -> str:
        pw = f'password "{self.password}";' if self.password else ""
        peers = "\n".join(
            f"protocol bgp n{i} from vgw {{ neighbor {node_ip(i)} as {NODE_ASN}; }}" for i in range(1, self.nodes + 1)
        )
        return self._bird_v4(pw, peers) + (self._bird_v6(pw) if self.ipv6 else "")

    def _bird_v4(self, pw: str, peers: str) -> str:
        return f"""
log stderr all;
router id {ROUTER_IP};
protocol device {{ scan time 10; }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths yes;
}}
template bgp vgw {{
    local {ROUTER_IP} as {ROUTER_ASN};
    ipv4 {{ import all; export none; }};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 2;
    {pw}
}}
{peers}
"""

    def _bird_v6(self, pw: str) -> str:
        """The IPv6 half of a dual-stack lab, mirroring the IPv4 one: the IPv6 kernel table (ECMP) and
        a session per node from ROUTER_IP6 with an ``ipv6`` channel."""
        peers = "\n".join(
            f"protocol bgp n{i}v6 from vgw6 {{ neighbor {node_ip6(i)} as {NODE_ASN}; }}"
            for i in range(1, self.nodes + 1)
        )
        return f"""
protocol kernel kernel6 {{
    ipv6 {{ import none; export all; }};
    merge paths yes;
}}
template bgp vgw6 {{
    local {ROUTER_IP6} as {ROUTER_ASN};
    ipv6 {{ import all; export none; }};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 2;
    {pw}
}}
{peers}
"""

    def close(self) -> None:
        if self.bird is not None and self.bird.poll() is None:
            self.bird.send_signal(signal.SIGTERM)
            try:
                self.bird.wait(5)
            except subprocess.TimeoutExpired:
                self.bird.kill()
                self.bird.wait(5)
        for i in range(1, self.nodes + 1):
            _ip("netns", "del", self.node_ns(i), check=False)
        _ip("netns", "del", self.router_ns, check=False)

    # -- looking at the router --

    def birdc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIRDC, "-s", str(self.bird_sock), *args], capture_output=True, text=True, check=False, timeout=10
        )

    def protocols(self) -> dict[str, str]:
        """BGP protocol name (n1, n2..., n1v6... in a dual-stack lab) -> BIRD state info
        (``Established``, ``Active``...)."""
        out: dict[str, str] = {}
        for line in self.birdc("show", "protocols").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP":
                out[parts[0]] = parts[5]
        return out

    def rib(self, prefix: str) -> str:
        """``birdc show route <prefix> all`` as text."""
        return self.birdc("show", "route", prefix, "all").stdout

    def rib_lacks(self, prefix: str) -> bool:
        """BIRD says it holds no route for ``prefix`` at all. Positive evidence, unlike an empty
        :meth:`rib_next_hops` (which a dead BIRD or a failed birdc also gives: birdc exits 1 both
        for "Network not found" and when it cannot reach BIRD)."""
        return "Network not found" in self.birdc("show", "route", prefix).stdout

    def rib_next_hops(self, prefix: str) -> set[str]:
        """Next hops of the routes BIRD holds for ``prefix`` (every path, best or not)."""
        hops = set()
        for raw in self.rib(prefix).splitlines():
            line = raw.strip()
            if line.startswith("BGP.next_hop:"):
                hops.add(line.split()[1])
        return hops

    def fib_next_hops(self, addr: str) -> set[str]:
        """Next hops the router's kernel has for ``addr`` (ECMP: several), IPv4 or IPv6. ``-6`` is
        needed for an IPv6 address: without it ``ip route show`` lists the IPv4 table only, and
        would find nothing for any IPv6 address."""
        family = ["-6"] if ":" in addr else []
        res = _ip("-n", self.router_ns, *family, "-j", "route", "show", addr, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return set()
        hops: set[str] = set()
        for route in json.loads(res.stdout):
            if "gateway" in route:
                hops.add(route["gateway"])
            for nh in route.get("nexthops", []):
                if "gateway" in nh:
                    hops.add(nh["gateway"])
        return hops


def sweep_stale_labs(min_age_s: float = 120.0) -> list[str]:
    """Remove labs that an interrupted run left behind: a router namespace ``vr<id>`` with no
    process in it (BIRD lives there for a lab's whole life) and older than ``min_age_s``, with its
    node namespaces, when none of those has a process either."""
    run = Path("/run/netns")
    if not run.is_dir():
        return []
    names = {p.name: p for p in run.iterdir()}
    removed = []
    for name, path in names.items():
        m = re.fullmatch(r"vr([0-9a-f]{6})", name)
        if m is None:
            continue
        try:
            if time.time() - path.stat().st_mtime < min_age_s:
                continue
        except OSError:
            continue
        nodes = [n for n in names if re.fullmatch(rf"vn\d+{m.group(1)}", n)]
        if any(_ip("netns", "pids", n, check=False).stdout.strip() for n in [name, *nodes]):
            continue
        for n in [*nodes, name]:
            _ip("netns", "del", n, check=False)
        removed.append(name)
    return removed


def processes_with(marker: str) -> dict[int, str]:
    """Live processes whose command line contains ``marker``."""
    found: dict[int, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found[int(pid)] = cmd
    return found


def kill_tree_leftovers(marker: str, grace_s: float = 3.0) -> list[str]:
    """Kill (and report) any process whose command line contains ``marker`` and that is still
    alive after ``grace_s`` -- a safety net for the lab's own processes only (the marker is the
    lab's private directory)."""
    deadline = time.monotonic() + grace_s
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(cmd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
    return found
