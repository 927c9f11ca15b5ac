"""A router namespace running a BIRD or FRR configuration, with ExaBGP speakers in node namespaces that
send what route control sends: docs/production.md's router example, run for real.

One bridge in the router namespace, one veth per node into it; each node namespace has only its
management address (the kernel's), as a node whose DPDK ports are not the kernel's would. ExaBGP's
configuration and announcements come from route control's own code (services/routectl/speaker.py),
for the nodes of a config document. Names carry a random suffix; :meth:`close` removes everything.
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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from services.routectl.decide import combine_attributes
from services.routectl.speaker import SpeakerConfig, exabgp_config, route_command
from vgw.config import ConfigDocument, Node

# The API process ExaBGP runs: commands from a FIFO to ExaBGP, ExaBGP's acknowledgements read and
# dropped (an API process that does not read them would block ExaBGP).
_API = r"""
import sys, threading, time
threading.Thread(target=lambda: [None for _ in sys.stdin], daemon=True).start()
with open(sys.argv[1]) as fifo:
    for line in fifo:
        print(line.strip(), flush=True)
while True:
    time.sleep(3600)
"""


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class RouterLab:
    """``kind`` is ``bird`` (BIRD 2) or ``frr`` (FRR's zebra and bgpd); ``router_conf`` its
    configuration file's text."""

    def __init__(self, doc: ConfigDocument, kind: str, router_conf: str, workdir: Path) -> None:
        self.doc = doc
        self.kind = kind
        self.dir = workdir
        self.id = secrets.token_hex(3)
        self.router = f"vprd{self.id}r"
        self.nodes = {n.id: f"vprd{self.id}{i}" for i, n in enumerate(doc.nodes)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.fifos: dict[str, IO[str]] = {}
        self.bird_ctl = workdir / "bird.ctl"
        # FRR's daemons drop to the user frr, which cannot enter pytest's 0700 directories
        self.frr_dir = Path(tempfile.mkdtemp(prefix=f"vgw-frr-{self.id}-")) if kind == "frr" else None
        try:
            self._build()
            self._start_router(router_conf)
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        (peer,) = {str(p.address) for n in self.doc.nodes if n.bgp for p in n.bgp.peers}
        for ns in (self.router, *self.nodes.values()):
            _ip("ip", "netns", "add", ns)
            _ip("ip", "-n", ns, "link", "set", "lo", "up")
        _ip("ip", "-n", self.router, "link", "add", "br0", "type", "bridge")
        _ip("ip", "-n", self.router, "addr", "add", f"{peer}/24", "dev", "br0")
        _ip("ip", "-n", self.router, "link", "set", "br0", "up")
        for node in self.doc.nodes:
            ns = self.nodes[node.id]
            mgmt = str(next(p.local_address for p in node.bgp.peers)) if node.bgp else None
            assert mgmt, f"{node.id}: the guide's nodes peer from a management address"
            _ip("ip", "link", "add", f"{ns}n", "type", "veth", "peer", "name", f"{ns}p")
            _ip("ip", "link", "set", f"{ns}n", "netns", ns)
            _ip("ip", "link", "set", f"{ns}p", "netns", self.router)
            _ip("ip", "-n", self.router, "link", "set", f"{ns}p", "master", "br0")
            _ip("ip", "-n", self.router, "link", "set", f"{ns}p", "up")
            _ip("ip", "-n", ns, "addr", "add", f"{mgmt}/24", "dev", f"{ns}n")
            _ip("ip", "-n", ns, "link", "set", f"{ns}n", "up")

    def _start_router(self, conf_text: str) -> None:
        if self.kind == "bird":
            # the router's logs go to the test's directory, not the host's syslog
            conf = self.dir / "bird.conf"
            conf.write_text(conf_text.replace("log syslog all;", "log stderr all;"))
            self._start("bird", ["bird", "-f", "-c", str(conf), "-s", str(self.bird_ctl)], self.router)
            return
        assert self.frr_dir is not None
        shutil.chown(self.frr_dir, "frr", "frr")
        conf = self.frr_dir / "frr.conf"
        conf.write_text(conf_text.replace("log syslog informational", "log stdout informational"))
        zserv = self.frr_dir / "zserv.api"
        for daemon in ("zebra", "bgpd"):
            self._start(daemon, [f"/usr/lib/frr/{daemon}", "-N", self.router, "-f", str(conf), "-u", "frr", "-g", "frr",
                                 "-i", str(self.frr_dir / f"{daemon}.pid"), "-z", str(zserv),
                                 "--vty_socket", str(self.frr_dir)], self.router)  # fmt: skip
            if daemon == "zebra":  # bgpd talks to zebra through its socket: wait for it
                self.wait("zebra's socket", zserv.exists)

    def established(self) -> int:
        """BGP sessions in state Established on the router."""
        if self.kind == "bird":
            return self.birdc("show", "protocols").count("Established")
        peers = json.loads(self.vtysh("show bgp ipv4 unicast summary json"))["peers"]
        return sum(1 for p in peers.values() if p.get("state") == "Established")

    def meds(self, prefix: str) -> list[int]:
        """The MED of every path the router has for prefix (best and backups)."""
        if self.kind == "bird":
            return [int(m) for m in re.findall(r"BGP\.med: (\d+)", self.birdc("show", "route", prefix, "all"))]
        paths = json.loads(self.vtysh(f"show bgp ipv4 unicast {prefix} json")).get("paths", [])
        return [int(p["metric"]) for p in paths if "metric" in p]

    def _start(self, name: str, cmd: list[str], ns: str, env: dict[str, str] | None = None) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        )

    def start_speaker(self, node: Node) -> None:
        """ExaBGP with the configuration routectl writes for ``node``."""
        cfg = SpeakerConfig.from_node(node, graceful_restart_s=0)
        assert cfg is not None
        fifo = self.dir / f"api-{node.id}"
        os.mkfifo(fifo)
        api = self.dir / "api.py"
        api.write_text(_API)
        conf = self.dir / f"exabgp-{node.id}.conf"
        conf.write_text(exabgp_config(cfg, f"{sys.executable} {api} {fifo}"))
        env = {**os.environ, "exabgp_daemon_daemonize": "false", "exabgp_daemon_drop": "false",
               "exabgp_daemon_user": "root", "exabgp_api_cli": "false", "exabgp_api_ack": "true",
               "exabgp_log_destination": "stdout", "exabgp_tcp_bind": ""}  # fmt: skip
        exabgp = shutil.which("exabgp", path=str(Path(sys.executable).parent)) or "exabgp"
        self._start(f"exabgp-{node.id}", [exabgp, str(conf)], self.nodes[node.id], env)
        # the FIFO opens for writing once ExaBGP has started its API process (ENXIO until then)
        deadline = time.monotonic() + 20
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"ExaBGP of {node.id} did not start: {self._logs()}") from None
                time.sleep(0.05)
        os.set_blocking(fd, True)
        self.fifos[node.id] = os.fdopen(fd, "w", buffering=1)

    def send(self, node_id: str, command: str) -> None:
        """A raw ExaBGP API command from the node's speaker."""
        self.fifos[node_id].write(command + "\n")

    def announce(self, node: Node, deprioritised: bool = False) -> None:
        """What route control sends for every VIP of the node (the VIP's normal or deprioritised
        attributes, next hop as routectl picks it)."""
        assert node.bgp is not None
        next_hop = node.bgp.next_hop or node.external.address.ip
        for vip in self.doc.vips:
            attrs = combine_attributes(vip, "primary", deprioritised, next_hop)
            for peer in SpeakerConfig.from_node(node, 0).peers:  # type: ignore[union-attr]
                cmd = route_command(peer, node.bgp.asn, vip.address, attrs)
                assert cmd is not None
                self.fifos[node.id].write(cmd + "\n")

    def next_hops(self, prefix: str) -> set[str]:
        r = subprocess.run(["ip", "-n", self.router, "-j", "route", "show", prefix], capture_output=True, text=True,
                           timeout=10, check=True)  # fmt: skip
        hops: set[str] = set()
        for route in json.loads(r.stdout or "[]"):
            hops.update([route["gateway"]] if "gateway" in route else [h["gateway"] for h in route.get("nexthops", [])])
        return hops

    def resilient_groups(self) -> bool:
        """Whether the router's kernel has a resilient next-hop group (docs/production.md says no)."""
        r = subprocess.run(["ip", "-n", self.router, "-d", "nexthop", "show"], capture_output=True, text=True,
                           timeout=10, check=True)  # fmt: skip
        return "resilient" in r.stdout

    def birdc(self, *args: str) -> str:
        r = subprocess.run(["birdc", "-s", str(self.bird_ctl), *args], capture_output=True, text=True, timeout=10,
                           check=False)  # fmt: skip
        return r.stdout

    def vtysh(self, command: str) -> str:
        assert self.frr_dir is not None
        r = subprocess.run(["vtysh", "--vty_socket", str(self.frr_dir), "-c", command], capture_output=True,
                           text=True, timeout=10, check=False)  # fmt: skip
        return r.stdout or "{}"

    def wait(self, what: str, ok: Callable[[], bool], timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({self.kind}); {self._logs()}")
            time.sleep(0.05)

    def _logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace")[-1500:] for p in self.dir.glob("*.log")}

    def close(self) -> None:
        for f in self.fifos.values():
            with contextlib.suppress(OSError):
                f.close()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for ns in (self.router, *self.nodes.values()):
            # anything still inside (ExaBGP's API child) goes with the namespace's processes
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if self.frr_dir is not None:
            shutil.rmtree(self.frr_dir, ignore_errors=True)
            shutil.rmtree(f"/var/run/frr/{self.router}", ignore_errors=True)  # FRR's -N path space
