"""Running a shipped form's node processes for real, in the lab's network namespaces.

:class:`ShippedLab` is ``vgwctl lab up`` (deploy/lab: namespaces, BIRD as the upstream router, the
backends, NATS with TLS and the permission matrix of ``vgwctl security init``, the config service
with docs/config-example.yaml applied, healthcheck, the monitor) in which each node's forwarder,
shim and route control are the processes of a rendered form -- the exact command, arguments and
environment of a container or a unit (:class:`Proc`) -- and the lab's own final check (the VIP
announced by both nodes at the router, a client served through it) is the test's. What cannot
exist on this machine is replaced by :class:`PathMap` (a path of the form -> a directory of the
test); the test names every other replacement.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deploy.lab import procs
from deploy.lab.lab import AFP_RING, BIN, FWD, Lab, LabError, preflight
from deploy.lab.plan import NODES

# A container's or a unit's PATH: the node image's /opt/vgw/bin (PATH=/opt/vgw/bin:... in
# deploy/docker/node.Dockerfile) is this venv's bin, its /usr/local/bin/vgw-fwd is dataplane/build's.
BASE_PATH = f"{BIN}:{FWD.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def prereqs() -> str | None:
    """Why a shipped form cannot run here (None when it can)."""
    try:
        preflight()
    except LabError as exc:
        return str(exc)
    return None if shutil.which("exabgp") or (BIN / "exabgp").exists() else "ExaBGP is not installed"


@dataclass
class PathMap:
    """Paths of the form -> directories of the test, longest prefix first, on path boundaries."""

    prefixes: dict[str, str] = field(default_factory=dict)

    def add(self, form_path: str, local: Path) -> Path:
        local.mkdir(parents=True, exist_ok=True)
        self.prefixes[form_path.rstrip("/")] = str(local)
        return local

    def __call__(self, value: str) -> str:
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if value == prefix or value.startswith(prefix + "/"):
                return self.prefixes[prefix] + value[len(prefix) :]
        return value


@dataclass
class Proc:
    """One process of a form: argv and environment exactly as the form gives them (after its own
    expansion rules), and the network namespace that stands in for the host's network."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ns: str | None = None


NodeStarter = Callable[["ShippedLab", str, str], None]
"""(lab, n, role) -> None: start node n's "fwd" (with whatever must run before it), "shim" or "routectl"."""


class ShippedLab(Lab):
    """``vgwctl lab up`` (deploy/lab/lab.py) with the node processes of a form: where the lab starts
    a node's forwarder, shim or route control, ``starter`` starts the form's instead; everything
    else, and the lab's own check that both nodes announce the VIP and serve a client, is the lab's."""

    def __init__(self, starter: NodeStarter) -> None:
        self.lines: list[str] = []
        super().__init__(secrets.token_hex(2), progress=self.lines.append)
        self.starter = starter
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    # the lab's hooks for a node's processes
    def start_forwarder(self, n: str, render: bool = True) -> None:
        self.starter(self, n, "fwd")
        assert self.state is not None
        self.state.sockets.setdefault(n, "")  # the form's, when its starter says where it is

    def _service(self, name: str, script: str, extra: dict[str, str]) -> None:
        role, _, n = name.partition("-")
        if role in ("shim", "routectl") and n in NODES:
            self.starter(self, n, role)
        else:
            super()._service(name, script, extra)

    def down(self) -> dict[str, object]:
        workdir = self.workdir if self.state is not None else None
        out = super().down()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)  # the logs too: a failure's message has their ends
        return out

    @property
    def workdir(self) -> Path:
        assert self.state is not None
        return Path(self.state.workdir)

    @property
    def security(self) -> Path:
        assert self.state is not None and self.state.security is not None
        return Path(self.state.security)

    @property
    def nats_url(self) -> str:
        assert self.state is not None
        return self.state.nats_url

    def eal(self, n: str) -> list[str]:
        """The EAL arguments of node n's forwarder here: af_packet on the node's veths, no hugepages,
        a file prefix `down` cleans up (what the lab runs; a real node names its NICs instead)."""
        lcores = "0@0,1@1" if (os.cpu_count() or 1) > 1 else "0@0,1@0"
        p = self.plan
        return ["--no-huge", "-m", "256", "--file-prefix", f"{p.file_prefix}-{n}", "--lcores", lcores, "--no-pci",
                "--log-level", "*:notice", "--vdev", f"net_af_packet0,iface={p.node_ext(n)}{AFP_RING}",
                "--vdev", f"net_af_packet1,iface={p.node_int(n)}{AFP_RING}"]  # fmt: skip

    def run_once(self, proc: Proc, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """An init container or an ExecStartPre: to completion, its output kept in the logs."""
        full = (["ip", "netns", "exec", proc.ns] if proc.ns else []) + proc.argv
        r = subprocess.run(full, env=proc.env, capture_output=True, text=True, timeout=timeout_s, check=False)
        (self.workdir / "logs" / f"{proc.name}.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise LabError(f"{proc.name} exited {r.returncode}: {r.stderr[-2000:]}")
        return r

    def start_proc(self, proc: Proc) -> subprocess.Popen[bytes]:
        popen = procs.start(self.plan.id, proc.name, proc.argv, proc.env, self.workdir / "logs", proc.ns)
        self.running[proc.name] = popen
        return popen

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self) -> str:
        """The end of every node process's log, for a failure's message."""
        return "\n".join(f"--- {n} ({'exit ' + str(p.poll()) if p.poll() is not None else 'running'}):\n"
                         f"{self.log(n)[-1500:]}" for n, p in self.running.items())  # fmt: skip

    def wait_for(self, ok: Callable[[], bool], timeout_s: float, what: str) -> float:
        t0 = time.monotonic()
        while not ok():
            if any(p.poll() is not None for p in self.running.values()):
                raise AssertionError(f"a node process exited while waiting for {what}\n{self.tails()}")
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{self.tails()}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def wait_ready(self, name: str, timeout_s: float = 30) -> None:
        self.wait_for(lambda: "vgw-fwd ready" in self.log(name), timeout_s, f"{name} ready")

    def run_forwarder(self, n: str, fwd: Proc) -> None:
        """Node n's forwarder as the form starts it, until it is ready; the lab's shim and checks then
        find it at the socket the form gives it."""
        self.start_proc(fwd)
        self.wait_ready(fwd.name)
        assert self.state is not None
        self.state.sockets[n] = fwd.argv[fwd.argv.index("--socket") + 1]


@contextlib.contextmanager
def shipped_lab(starter: NodeStarter) -> Iterator[ShippedLab]:
    """The lab up with the form's node processes, its own check passed (the VIP at the router via both
    nodes, a client served), else the failure with the node processes' logs; down at the end."""
    s = ShippedLab(starter)
    try:
        try:
            s.up(timeout_s=150)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{s.tails()}") from exc
        yield s
    finally:
        s.down()


# --- the forms' own expansion rules ---------------------------------------------------------------


def kube_expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) in env values, command and args: a variable defined before it, else kept
    as written; $$ escapes."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), value)


def systemd_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile=: KEY=VALUE lines, # and ; comments, optional quotes."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, _, v = line.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def systemd_exec(line: str, env: dict[str, str]) -> list[str]:
    """An Exec*= line as systemd runs it: a leading -/@/+/! prefix dropped, ${VAR} replaced within a
    word (one argument), a word that is exactly $VAR split at whitespace (zero or more)."""
    words = shlex.split(line.lstrip("-@+!:"))
    out: list[str] = []
    for w in words:
        m = re.fullmatch(r"\$(\w+)", w)
        if m:
            out.extend(shlex.split(env.get(m[1], "")))
        else:
            out.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], ""), w))
    return out


def systemd_unit(path: Path, instance: str | None = None, section: str = "[Service]") -> dict[str, list[str]]:
    """A section's settings of a unit file, every value of a repeated key (systemd allows them); %i
    as the instance when one is given, else as written."""
    out: dict[str, list[str]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line
        elif current == section and "=" in line and not line.startswith(("#", ";")):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v if instance is None else v.replace("%i", instance))
    return out


def systemd_environment(unit: dict[str, list[str]], paths: PathMap) -> dict[str, str]:
    """A service's environment: systemd's PATH, then Environment=, then every EnvironmentFile= in
    order (they override Environment=; a missing file is an error unless its name starts with -)."""
    env = {"PATH": BASE_PATH}
    for line in unit.get("Environment", []):
        for assignment in shlex.split(line):
            k, _, v = assignment.partition("=")
            env[k] = v
    for name in unit.get("EnvironmentFile", []):
        optional = name.startswith("-")
        path = Path(paths(name.removeprefix("-")))
        if not path.exists():
            if optional:
                continue
            raise LabError(f"EnvironmentFile {name} ({path}) does not exist")
        env.update(systemd_env_file(path))
    return env
