"""Adds to routectl's BGP lab what the monitor needs: nodes that serve the VIP themselves (a plain
routed host per node, as issue #8 allows: the VIP on lo and an HTTP server), a client network
behind the router, and a monitor vantage point on the nodes' segment."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.routectl.harness import VIP
from tests.routectl.lab import ROUTER_IP, Lab

CLIENT_IP = "198.18.0.2"
CLIENT_GW = "198.18.0.1"
VANTAGE_IP = "192.0.2.50"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=15)


def ns_sysctl(ns: str, key: str, value: str) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")


@dataclass
class MonitorLab:
    lab: Lab
    workdir: Path
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def client_ns(self) -> str:
        return f"vc{self.lab.id}"

    @property
    def vantage_ns(self) -> str:
        return f"vv{self.lab.id}"

    def start(self) -> MonitorLab:
        lab, r = self.lab, self.lab.router_ns
        ns_sysctl(r, "net.ipv4.ip_forward", "1")
        for key in ("net.ipv4.conf.all.send_redirects", "net.ipv4.conf.br0.send_redirects"):
            ns_sysctl(r, key, "0")  # redirects would let the vantage point bypass the router's ECMP
        # client network behind the router
        c, cv, rv = self.client_ns, f"c{lab.id}", f"rc{lab.id}"
        sh("ip", "netns", "add", c)
        sh("ip", "link", "add", cv, "type", "veth", "peer", "name", rv)
        sh("ip", "link", "set", cv, "netns", c)
        sh("ip", "link", "set", rv, "netns", r)
        sh("ip", "-n", r, "addr", "add", f"{CLIENT_GW}/24", "dev", rv)
        sh("ip", "-n", r, "link", "set", rv, "up")
        sh("ip", "-n", c, "link", "set", "lo", "up")
        sh("ip", "-n", c, "addr", "add", f"{CLIENT_IP}/24", "dev", cv)
        sh("ip", "-n", c, "link", "set", cv, "up")
        sh("ip", "-n", c, "route", "add", "default", "via", CLIENT_GW)
        # the monitor's vantage point, on the nodes' segment
        v, vv, bv = self.vantage_ns, f"m{lab.id}", f"bm{lab.id}"
        sh("ip", "netns", "add", v)
        sh("ip", "link", "add", vv, "type", "veth", "peer", "name", bv)
        sh("ip", "link", "set", vv, "netns", v)
        sh("ip", "link", "set", bv, "netns", r)
        sh("ip", "-n", r, "link", "set", bv, "master", "br0")
        sh("ip", "-n", r, "link", "set", bv, "up")
        sh("ip", "-n", v, "link", "set", "lo", "up")
        sh("ip", "-n", v, "addr", "add", f"{VANTAGE_IP}/24", "dev", vv)
        sh("ip", "-n", v, "link", "set", vv, "up")
        sh("ip", "-n", v, "route", "add", "default", "via", ROUTER_IP)
        ns_sysctl(v, "net.ipv4.conf.all.accept_redirects", "0")
        # each node serves the VIP itself
        for i in range(1, lab.nodes + 1):
            n = lab.node_ns(i)
            sh("ip", "-n", n, "addr", "add", f"{VIP}/32", "dev", "lo")
            sh("ip", "-n", n, "route", "add", "default", "via", ROUTER_IP)
            # A new namespace inherits the host's ip_forward (IPv4 copies init_net's settings), and a
            # host running containers has it on: a node without the VIP would then route its packets
            # on to the other node instead of dropping them, and no blackhole would be seen.
            ns_sysctl(n, "net.ipv4.ip_forward", "0")
            docroot = self.workdir / f"www-n{i}"
            docroot.mkdir(parents=True, exist_ok=True)
            (docroot / "index.html").write_text(f"n{i}\n")
            self.servers[i] = subprocess.Popen(
                ["ip", "netns", "exec", n, sys.executable, "-m", "http.server", "80", "--bind", VIP,
                 "--directory", str(docroot)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        for i in self.servers:
            while self.node_get(i) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"HTTP server of n{i} did not start")
                time.sleep(0.1)
        return self

    def node_get(self, i: int) -> str | None:
        """GET / on the VIP from inside node i (is its server up?)."""
        code = f"import urllib.request;print(urllib.request.urlopen('http://{VIP}/',timeout=1).read().decode())"
        r = sh("ip", "netns", "exec", self.lab.node_ns(i), sys.executable, "-c", code, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def blackhole(self, i: int) -> None:
        """Node i silently drops the VIP's traffic: without the address (and with forwarding off),
        packets for the VIP are dropped without a reset or an ICMP error."""
        sh("ip", "-n", self.lab.node_ns(i), "addr", "del", f"{VIP}/32", "dev", "lo")

    def repair(self, i: int) -> None:
        sh("ip", "-n", self.lab.node_ns(i), "addr", "add", f"{VIP}/32", "dev", "lo")

    def client_requests(self, n: int, timeout: float = 1.0) -> tuple[int, int]:
        """n HTTP requests from the client through the router, each on a new connection."""
        code = (
            "import urllib.request,sys\n"
            "ok=0\n"
            f"for _ in range({n}):\n"
            "    try:\n"
            f"        urllib.request.urlopen('http://{VIP}/',timeout={timeout}).read(); ok+=1\n"
            "    except Exception: pass\n"
            "print(ok)\n"
        )
        r = sh("ip", "netns", "exec", self.client_ns, sys.executable, "-c", code, check=False)
        return int(r.stdout.strip() or 0), n

    def close(self) -> None:
        for p in self.servers.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for ns in (self.client_ns, self.vantage_ns):
            sh("ip", "netns", "del", ns, check=False)
