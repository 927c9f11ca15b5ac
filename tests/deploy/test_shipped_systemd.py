"""The systemd units of a VGW node, run for real: vgw-fwd.service (its ExecStartPre renders the
forwarder's settings from the config store, then ExecStart), vgw-shim@<node>.service and
vgw-routectl@<node>.service, each with the exact command line and environment systemd would give
it (Environment=, then the EnvironmentFile=s in order, %i, ${VAR} and $VAR as systemd expands
them), for two nodes in the lab's namespaces; a client's request through the VIP then reaches a
backend over the route BIRD learnt by BGP from each node.

What a user writes is written as docs/deploy.md says: /etc/vgw/vgw.env (vgw.env.example as
shipped), /etc/vgw/fwd.env (the node id, the EAL of the node's veths -- af_packet, no hugepages, a
unique file prefix -- and `--ext net_af_packet0 --int net_af_packet1 --sync-key-file
/etc/vgw/conn-sync.key` in VGW_FWD_CONFIG_ARGS), /etc/vgw/conn-sync.key, and the override files
the units read: /etc/vgw/shim.env and /etc/vgw/routectl.env with VGW_METRICS_ADDR (two nodes share
this machine's loopback) and VGW_EXABGP_NETNS (the node's namespace). The identities are the
lab's `vgwctl security init` output (NATS with TLS, client certificates and the permission matrix).
Replaced, because they cannot exist here:

* /etc/vgw, /run/vgw and /run/vgw-routectl -> a directory per node (every argument and variable);
* /opt/vgw/bin -> this venv's bin, /usr/local/bin/vgw-fwd -> dataplane/build/vgw-fwd;
* ``--socket-group vgw`` -> ``--socket-group root`` (systemd-sysusers' group vgw does not exist on
  this machine), and the units' User=vgw: every process runs as root here;
* host networking: the forwarder runs in the node's namespace (its veths); NATS listens on this
  host's loopback, so ExecStartPre, the shim and route control run here (ExaBGP in the node's
  namespace, VGW_EXABGP_NETNS);
* the sandboxing options (ProtectSystem=, SystemCallFilter=, ...) need systemd as PID 1: they are
  checked by test_systemd.py (systemd-analyze verify / security).
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

import pytest

from deploy.lab.lab import BIN as VENV_BIN
from deploy.lab.lab import FWD
from deploy.lab.plan import NODES
from tests.deploy.common import SYSTEMD
from tests.deploy.shipped import (
    PathMap,
    Proc,
    ShippedLab,
    prereqs,
    shipped_lab,
    systemd_environment,
    systemd_exec,
    systemd_unit,
)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(prereqs() is not None, reason=str(prereqs()))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SystemdNodes:
    """The starter of ShippedLab: each node a machine with the units installed, /etc/vgw filled in."""

    def __init__(self) -> None:
        self.paths: dict[str, PathMap] = {}
        self.key = os.urandom(16).hex() + "\n"

    def machine(self, s: ShippedLab, n: str) -> PathMap:
        if n in self.paths:
            return self.paths[n]
        root = s.workdir / "systemd" / n
        paths = PathMap()
        etc = paths.add("/etc/vgw", root / "etc")
        paths.add("/run/vgw", root / "run")
        paths.add("/run/vgw-routectl", root / "run-routectl")
        paths.prefixes["/opt/vgw/bin"] = str(VENV_BIN)
        paths.prefixes["/usr/local/bin/vgw-fwd"] = str(FWD)
        (etc / "security").symlink_to(s.security)  # identities copied to the host (docs/deploy.md)
        (etc / "vgw.env").write_text((SYSTEMD / "vgw.env.example").read_text())
        node_id = NODES[n][0]
        (etc / "fwd.env").write_text(
            f"VGW_NODE_ID={node_id}\n"
            f"VGW_FWD_EAL={shlex.join(s.eal(n))}\n"
            "VGW_FWD_CONFIG_ARGS=--ext net_af_packet0 --int net_af_packet1 --sync-key-file /etc/vgw/conn-sync.key\n"
        )
        key = etc / "conn-sync.key"
        key.write_text(self.key)
        key.chmod(0o600)
        (etc / "shim.env").write_text(f"VGW_METRICS_ADDR=127.0.0.1:{free_port()}\n")
        (etc / "routectl.env").write_text(
            f"VGW_METRICS_ADDR=127.0.0.1:{free_port()}\nVGW_EXABGP_NETNS={s.plan.node(n)}\n"
        )
        self.paths[n] = paths
        return paths

    def proc(self, s: ShippedLab, n: str, unit_file: str, key: str, ns: str | None) -> Proc:
        paths = self.machine(s, n)
        unit = systemd_unit(SYSTEMD / unit_file, NODES[n][0])
        env = {k: paths(v) for k, v in systemd_environment(unit, paths).items()}
        (line,) = unit[key]
        argv = [paths(a) for a in systemd_exec(line, env)]
        if "--socket-group" in argv:
            argv[argv.index("--socket-group") + 1] = "root"
        name = {"vgw-fwd.service": "fwd", "vgw-shim@.service": "shim", "vgw-routectl@.service": "routectl"}[unit_file]
        return Proc(f"{name}-{n}" + ("-pre" if key == "ExecStartPre" else ""), argv, env, ns)

    def __call__(self, s: ShippedLab, n: str, role: str) -> None:
        if role == "fwd":
            s.run_once(self.proc(s, n, "vgw-fwd.service", "ExecStartPre", ns=None))
            s.run_forwarder(n, self.proc(s, n, "vgw-fwd.service", "ExecStart", ns=s.plan.node(n)))
        else:
            s.start_proc(self.proc(s, n, f"vgw-{role}@.service", "ExecStart", ns=None))


def test_the_units_forward_for_every_node() -> None:
    nodes = SystemdNodes()
    with shipped_lab(nodes) as s:
        for n, paths in nodes.paths.items():
            # ExecStartPre wrote the file ExecStart reads, with this node's own address and next hop
            conf = Path(paths("/run/vgw/fwd.conf")).read_text().splitlines()
            assert conf[0].endswith("from config store revision 1"), conf[0]
            assert f"ext net_af_packet0 {NODES[n][1]}/24" in conf and "route 0.0.0.0/0 192.0.2.1 ext" in conf
            assert f"sync-key-file {paths('/etc/vgw/conn-sync.key')}" in conf
            assert f"wrote {paths('/run/vgw/fwd.conf')} for node {NODES[n][0]}" in s.log(f"fwd-{n}-pre")
        assert s.router_next_hops() == {addr for _id, addr in NODES.values()}
        reply = s.client_get()
        assert reply is not None and reply.startswith("backend-"), reply
        # the units' stop order (test_systemd.py): route control, then the shim, then the forwarder
        for n in NODES:
            for role in ("routectl", "shim", "fwd"):
                p = s.running.pop(f"{role}-{n}")
                p.send_signal(signal.SIGTERM)
                assert p.wait(timeout=30) == 0, (role, n, s.log(f"{role}-{n}")[-1500:])


def test_the_unit_refuses_to_start_without_the_node_file(tmp_path: Path) -> None:
    """fwd.env is required (it names the node): without it systemd does not start the unit."""
    unit = systemd_unit(SYSTEMD / "vgw-fwd.service")
    paths = PathMap()
    paths.add("/etc/vgw", tmp_path / "etc")
    from deploy.lab.lab import LabError

    with pytest.raises(LabError, match=r"fwd\.env"):
        systemd_environment(unit, paths)
