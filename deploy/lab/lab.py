"""`vgwctl lab up | down | status`: a complete VGW in network namespaces (docs/lab.md).

``up`` builds the topology, starts NATS (TLS, client certificates and the permission matrix of
``vgwctl security init``; ``--insecure``: open, as before issue #15), BIRD, the backends, the
config service (and applies docs/config-example.yaml with vgwctl), healthcheck, two nodes (vgw-fwd
on af_packet veths in dual-arm mode, its shim, routectl with ExaBGP) and the monitor, then waits
until the VIP is announced by both nodes and serves clients. ``down`` removes every namespace, link, process and
DPDK runtime file of the lab, whatever state it was left in.

Secure by default, like every shipped form: the workdir gets ``security/`` from
:func:`vgw.security.init_dir` and each process connects as its identity (config, healthcheck,
monitor, routectl-<node>, shim-<node>); the lab's own tooling reads NATS as ``operator`` and calls
vgwctl as ``admin`` (NATS and the config API over TLS with client certificates and a token).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import mgmtlink, natscluster, net, procs
from .plan import BACKENDS, CLIENT, NODES, SPARE_BACKEND, VIP, VIP_PORT, Plan
from .servers import BACKEND, bird_config

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FWD = REPO / "dataplane" / "build" / "vgw-fwd"
EXAMPLE = REPO / "docs" / "config-example.yaml"
STATE_DIR = Path("/run/vgw-lab")
NODE_ASN = 65010
# net_af_packet's rings (DPDK's default: 512 frames). The lab's two forwarders share one CPU for their
# workers, so a worker is off-CPU for whole scheduler slices; at a flood's ~150k packets per second
# per node, 512 frames overflow within a slice (the syn-flood scenario lost ~30% of its packets,
# legitimate ones included, in them). 8192 frames hold ~50 ms (16 MB per ring, rx and tx per port).
AFP_RING = ",framecnt=8192"
# where vgw-fwd keeps connection state per EAL file prefix by default (--conn-state auto)
CONN_STATE_BASES = ("/dev/shm/vgw-fwd", "/dev/hugepages/vgw-fwd")


# Route control advertises BGP graceful restart: a crashed routectl (kill -9) restarts within this
# time and the router keeps the node's routes (stale) meanwhile, instead of withdrawing a node whose
# forwarder never stopped (docs/lab.md, "Chaos"; docs/routectl.md, "Graceful-restart option").
GRACEFUL_RESTART_S = 10

NATS_CLUSTER_SIZES = (1, 3, 5)
"""``--nats-cluster``: one server, or an odd number (a JetStream cluster needs a majority)."""

# The identity of each lab process (docs/security.md); shim-<n>/routectl-<n> run as <role>-<node id>.
_IDENTITY = {"config": "config", "healthcheck": "healthcheck", "monitor": "monitor"}


class LabError(RuntimeError):
    pass


@dataclass
class LabState:
    id: str
    workdir: str
    nats_url: str
    config_addr: str
    metrics: dict[str, int] = field(default_factory=dict)
    sockets: dict[str, str] = field(default_factory=dict)
    trace_dir: str | None = None
    started_at: float = 0.0
    # the output of `vgwctl security init` (None: an --insecure lab, NATS and the config API open)
    security: str | None = None
    # NATS servers (1, or a cluster: nats_url lists every one) and the JetStream replicas services use
    nats_servers: int = 1
    js_replicas: int = 1
    # each service's console script and extra environment, so one can be started again (chaos)
    services: dict[str, list[Any]] = field(default_factory=dict)
    # each node's NATS URL(s) through its management link relay (mgmtlink.py)
    mgmt_urls: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_path(self.id)

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(asdict(self), indent=2))


def state_path(lab_id: str) -> Path:
    return STATE_DIR / f"{lab_id}.json"


def load_state(lab_id: str) -> LabState | None:
    try:
        return LabState(**json.loads(state_path(lab_id).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an identity's vgw.env (comments and blank lines skipped)."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces): run it as root")
    missing = [
        what
        for what, path in (
            ("vgw-fwd (make setup builds it)", FWD),
            ("nats-server", Path(shutil.which("nats-server") or "/usr/bin/nats-server")),
            ("BIRD 2 (bird2)", Path(shutil.which("bird") or "/usr/sbin/bird")),
            ("vgw services (make setup)", BIN / "vgw-config"),
        )
        if not path.exists()
    ]
    if missing:
        raise LabError(f"missing: {', '.join(missing)}")


class Lab:
    def __init__(
        self,
        lab_id: str = "lab",
        progress: Callable[[str], None] = print,
        insecure: bool = False,
        nats_cluster: int = 1,
    ) -> None:
        self.plan = Plan(lab_id)
        self.say = progress
        self.insecure = insecure  # for `up`; a running lab's mode is in its state
        if nats_cluster not in NATS_CLUSTER_SIZES:
            raise ValueError(f"--nats-cluster {nats_cluster}: one of {', '.join(map(str, NATS_CLUSTER_SIZES))}")
        self.nats_cluster = nats_cluster  # for `up`, like insecure
        # the document the forwarders' settings are rendered from (a scenario may run a variant)
        self.fwd_config: Path = EXAMPLE
        self.state: LabState | None = load_state(lab_id)

    # -- up --------------------------------------------------------------------------------------

    def up(self, timeout_s: float = 180.0) -> LabState:
        preflight()
        if self.state is not None or set(self.plan.namespaces()) & net.existing_namespaces():
            self.say("a previous lab with this id is still here: removing it first")
            self.down()
        p = self.plan
        workdir = Path(f"/tmp/vgw-lab-{p.id}")
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / "logs").mkdir(parents=True)
        traces = None
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            traces = workdir / "traces"
            traces.mkdir()
        scheme = "nats" if self.insecure else "tls"
        nats_url = ",".join(f"{scheme}://127.0.0.1:{_free_port()}" for _ in range(self.nats_cluster))
        st = LabState(
            id=p.id, workdir=str(workdir), nats_url=nats_url,
            config_addr=f"127.0.0.1:{_free_port()}", trace_dir=str(traces) if traces else None,
            started_at=time.time(), security=None if self.insecure else str(workdir / "security"),
            nats_servers=self.nats_cluster, js_replicas=min(3, self.nats_cluster),
        )  # fmt: skip
        self.state = st
        st.save()  # from here on, `down` can clean up whatever happens
        t0 = time.monotonic()
        try:
            self.say("[1/7] network namespaces and links")
            net.build(p)
            self.say("[2/7] backends (3 in the config, 1 spare) and the router (BIRD 2)")
            for i in [*BACKENDS, SPARE_BACKEND[0]]:
                self._start(f"backend-{i}", [sys.executable, "-c", BACKEND, f"backend-{i}"], ns=p.backend(i))
            (workdir / "bird.conf").write_text(bird_config(NODE_ASN))
            self._start("bird", [shutil.which("bird") or "/usr/sbin/bird", "-f", "-c", str(workdir / "bird.conf"),
                                 "-s", str(workdir / "bird.ctl")], ns=p.router)  # fmt: skip
            ports = [int(u.rsplit(":", 1)[1]) for u in st.nats_url.split(",")]
            self._start_nats(ports, workdir)
            self._wait(lambda: all(_tcp_open(port) for port in ports), 20, "NATS")
            self.say("[4/7] config service, and the example configuration applied with vgwctl")
            self._service("config", "vgw-config", {"VGW_CONFIG_ADDR": st.config_addr})
            self._wait(lambda: self.vgwctl("status").returncode == 0, 30, "the config service")
            r = self.vgwctl("apply", "-f", str(EXAMPLE), "--reason", "lab up: docs/config-example.yaml")
            if r.returncode != 0:
                raise LabError(f"vgwctl apply failed: {r.stderr or r.stdout}")
            self.say("[5/7] healthcheck and the monitor")
            self._service("healthcheck", "vgw-healthcheck", {"VGW_HC_NETNS": p.healthcheck})
            self._service("monitor", "vgw-monitor", {"VGW_MONITOR_NETNS": p.monitor, "VGW_MONITOR_FAIL_AFTER": "2",
                                                      "VGW_MONITOR_HOLD_DOWN_S": "10"})  # fmt: skip
            self.say("[6/7] nodes: vgw-fwd (DPDK, af_packet, dual-arm), shim, routectl + ExaBGP")
            self._start_nodes(st, workdir)
            self.say("[7/7] waiting for the VIP to be announced by both nodes and to serve clients")
            left = max(30.0, timeout_s - (time.monotonic() - t0))
            self._wait(lambda: len(self.router_next_hops()) == len(NODES), left, "both nodes to announce the VIP")
            self._wait(lambda: self.client_get() is not None, 30, "a client request through the VIP")
        except Exception:
            self.say(f"lab up failed; logs in {workdir / 'logs'}")
            raise
        st.save()
        self.say(f"lab up in {time.monotonic() - t0:.1f}s: VIP {VIP}:{VIP_PORT} served by both nodes")
        return st

    def _start_nodes(self, st: LabState, workdir: Path) -> None:
        """Each node: its management link, vgw-fwd, the shim and route control (through the link)."""
        p = self.plan
        for n in NODES:
            st.mgmt_urls[n] = mgmtlink.start(self, n, _free_port)
        self._wait(lambda: all(_tcp_open(int(u.rsplit(":", 1)[1])) for n in NODES
                               for u in st.mgmt_urls[n].split(",")), 20, "the nodes' management links")  # fmt: skip
        for n, (node_id, _addr) in NODES.items():
            self.start_forwarder(n)
            self._service(f"shim-{n}", "vgw-shim", {"VGW_NODE_ID": node_id, "VGW_FWD_SOCKET": st.sockets[n],
                                                    "VGW_NATS_URL": st.mgmt_urls[n]})  # fmt: skip
            self._service(f"routectl-{n}", "vgw-routectl", {
                "VGW_NODE_ID": node_id, "VGW_EXABGP_NETNS": p.node(n), "VGW_RUN_DIR": str(workdir / f"exabgp-{n}"),
                "VGW_HOLD_DOWN_S": "2", "VGW_FWD_SOCKET": st.sockets[n], "VGW_NATS_URL": st.mgmt_urls[n],
                "VGW_GRACEFUL_RESTART_S": str(GRACEFUL_RESTART_S),
            })  # fmt: skip

    def _start_nats(self, ports: list[int], workdir: Path) -> None:
        assert self.state is not None
        if len(ports) > 1:
            self._start_nats_cluster(ports, workdir)
            return
        if self.state.security is None:
            self.say("[3/7] NATS with JetStream")
            self.say("      *** INSECURE lab (--insecure): NATS and the config API accept ANY local client "
                     "without authentication ***")  # fmt: skip
        else:
            self.say("[3/7] NATS with JetStream, TLS and the permission matrix (vgwctl security init)")
            self._init_security(Path(self.state.security), workdir)
        self._start("nats", self._nats_command(ports[0], workdir))

    def _nats_command(self, port: int, workdir: Path) -> list[str]:
        assert self.state is not None
        if self.state.security is None:
            return ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(workdir / "jetstream"),
                    "-n", f"vgw-lab-{self.plan.id}"]  # fmt: skip
        return ["nats-server", "-c", str(Path(self.state.security) / "nats" / "nats-server.conf")]

    def _start_nats_cluster(self, ports: list[int], workdir: Path) -> None:
        """Servers in one JetStream cluster on loopback (deploy/lab/natscluster.py); services get
        every URL and VGW_JS_REPLICAS, so each bucket and the event stream are replicated."""
        assert self.state is not None
        secure = self.state.security is not None
        self.say(f"[3/7] NATS: a cluster of {len(ports)} servers with JetStream (R{self.state.js_replicas})"
                 + (", TLS and the permission matrix (vgwctl security init)" if secure else ""))  # fmt: skip
        if secure:
            security = Path(self.state.security or "")
            self._init_security(security, workdir)
            conf_dir = security / "nats"
        else:
            self.say("      *** INSECURE lab (--insecure): NATS and the config API accept ANY local client "
                     "without authentication ***")  # fmt: skip
            conf_dir = workdir / "nats"
        servers = natscluster.plan(self.plan.id, conf_dir, workdir, ports, [_free_port() for _ in ports])
        natscluster.write(servers, f"vgw-lab-{self.plan.id}", secure)
        for i, server in enumerate(servers):
            self._start(f"nats-{i}", ["nats-server", "-c", str(server.conf)])

    def _init_security(self, directory: Path, workdir: Path) -> None:
        """The lab's CA, NATS configuration and identities: what `vgwctl security init` writes, for
        this lab's nodes, NATS address and JetStream store (both in the workdir)."""
        from vgw.security import init_dir

        assert self.state is not None
        res = init_dir(  # the first server's URL: init_dir renders one server's configuration
            directory, [node_id for node_id, _addr in NODES.values()], nats_url=self.state.nats_url.split(",")[0],
            store_dir=str(workdir / "jetstream"), nats_listen_host="127.0.0.1",
        )  # fmt: skip
        if res.refused:  # a fresh workdir: nothing to refuse, unless something is very wrong
            raise LabError(f"vgwctl security init refused to write {directory}: {res.refused}")

    def identity_env(self, identity: str) -> dict[str, str]:
        """The VGW_* settings of one identity (its vgw.env); nothing for an --insecure lab."""
        assert self.state is not None
        if self.state.security is None:
            return {}
        return read_env_file(Path(self.state.security) / "identities" / identity / "vgw.env")

    def nats_options(self, identity: str = "operator") -> dict[str, Any]:
        """``nats.connect`` arguments for the lab's own tooling, as ``identity`` (the status
        snapshot reads routes, health and the monitor's view: what ``operator`` may read)."""
        from vgw.settings import VgwSettings

        assert self.state is not None
        values = {k.removeprefix("VGW_").lower(): v for k, v in self.identity_env(identity).items()}
        values["nats_url"] = self.state.nats_url
        return VgwSettings.model_validate(values).nats_options()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VGW_")}
        env["PYTHONPATH"] = str(REPO)
        return env

    def _start(self, name: str, cmd: list[str], ns: str | None = None, env: dict[str, str] | None = None) -> None:
        assert self.state is not None
        procs.start(self.plan.id, name, cmd, env or self._env(), Path(self.state.workdir) / "logs", ns)

    def _service(self, name: str, script: str, extra: dict[str, str]) -> None:
        assert self.state is not None
        self.state.services[name] = [script, extra]
        port = self.state.metrics.get(name) or _free_port()  # a restart keeps its metrics port
        self.state.metrics[name] = port
        env = self._env()
        # shim-a -> shim-node-a: the identity of a node's process is its role and the node id
        role, _, n = name.partition("-")
        env.update(self.identity_env(_IDENTITY.get(name) or f"{role}-{NODES[n][0]}"))
        env.update({
            "VGW_NATS_URL": self.state.nats_url, "VGW_INSTANCE_ID": name, "VGW_METRICS_ADDR": f"127.0.0.1:{port}",
            "VGW_CONFIG_ADDR": self.state.config_addr, "VGW_JS_REPLICAS": str(self.state.js_replicas), **extra,
        })  # fmt: skip
        if self.state.trace_dir:
            env["VGW_TRACE_FILE"] = str(Path(self.state.trace_dir) / f"{name}.jsonl")
        self._start(name, [str(BIN / script)], env=env)
        self.state.save()

    def restart_nats(self) -> None:
        """Start the lab's NATS server again (after a kill), on its port and JetStream directory."""
        assert self.state is not None
        if self.state.nats_servers != 1:
            raise LabError("restart_nats: only a one-server lab (a cluster's servers restart one by one)")
        port = int(self.state.nats_url.rsplit(":", 1)[1])
        self._start("nats", self._nats_command(port, Path(self.state.workdir)))
        self._wait(lambda: _tcp_open(port), 20, "NATS")

    def restart_service(self, name: str) -> None:
        """Start service ``name`` (e.g. ``shim-a``) again as ``up`` started it (after a kill)."""
        assert self.state is not None
        script, extra = self.state.services[name]
        self._service(name, script, extra)

    def pids(self, name: str) -> list[int]:
        """Live processes of one lab part: a service (``routectl-a``), ``fwd-a``, ``nats`` (every server)."""
        assert self.state is not None
        if name.startswith("fwd-"):
            needle = f"--file-prefix\0{self.plan.file_prefix}-{name[4:]}\0".encode()
            return [pid for pid in procs.marked(self.plan.id) if needle in procs.cmdline(pid) and procs.is_exe(pid)]
        if name == "nats":
            return [pid for pid in procs.marked(self.plan.id) if procs.cmdline(pid).startswith(b"nats-server\0")]
        return procs.with_env(self.plan.id, "VGW_INSTANCE_ID", name)

    @staticmethod
    def _sync_key(wd: Path) -> Path:
        """The lab cluster's connection-sync key (docs/forwarder.md, "Connection sync"): one secret
        both forwarders read, readable by its owner only, made once per lab."""
        key = wd / "conn-sync.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(16) + "\n")
        return key

    def fwd_binary(self) -> Path:
        """The lab's own copy of vgw-fwd (``<workdir>/bin/vgw-fwd``), which both nodes run: a rebuild
        of dataplane/build/ does not change a running lab, and an upgrade replaces this file
        (:meth:`install_forwarder`) before a forwarder restarts."""
        assert self.state is not None
        path = Path(self.state.workdir) / "bin" / "vgw-fwd"
        if not path.exists():
            self.install_forwarder()
        return path

    def install_forwarder(self, source: Path = FWD) -> Path:
        """Put a fresh copy of ``source`` at the lab's forwarder path, atomically (a new file, then a
        rename over the old one: a running forwarder keeps its inode, the next start runs the new one)."""
        assert self.state is not None
        path = Path(self.state.workdir) / "bin" / "vgw-fwd"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".vgw-fwd.{os.getpid()}.new")
        shutil.copy2(source, tmp)
        os.replace(tmp, path)
        return path

    def start_forwarder(self, n: str, render: bool = True) -> None:
        """(Re)start node n's vgw-fwd and wait until it is ready; ``render=False`` keeps the settings
        file it ran with (a restart: the file is rendered from the document already applied)."""
        assert self.state is not None
        p, wd = self.plan, Path(self.state.workdir)
        node_id = NODES[n][0]
        settings = wd / f"fwd-{n}.conf"
        if render or not settings.exists():
            r = subprocess.run(
                [sys.executable, "-m", "dataplane.shim.fwdargs", "--config", str(self.fwd_config), "--node", node_id,
                 "--ext", "net_af_packet0", "--int", "net_af_packet1", "--sync-key-file", str(self._sync_key(wd))],
                capture_output=True, text=True, cwd=str(REPO), check=True,
            )  # fmt: skip
            settings.write_text(r.stdout)
        sock = str(wd / f"fwd-{n}.sock")
        self.state.sockets[n] = sock
        log = wd / "logs" / f"fwd-{n}.log"
        start = log.stat().st_size if log.exists() else 0
        lcores = "0@0,1@1" if (os.cpu_count() or 1) > 1 else "0@0,1@0"
        fwd = str(self.fwd_binary())
        self._start(f"fwd-{n}", [
            fwd, "--no-huge", "-m", "256", "--file-prefix", f"{p.file_prefix}-{n}", "--lcores", lcores,
            "--no-pci", "--log-level", "*:notice",
            "--vdev", f"net_af_packet0,iface={p.node_ext(n)}{AFP_RING}",
            "--vdev", f"net_af_packet1,iface={p.node_int(n)}{AFP_RING}",
            "--", "--config", str(settings), "--workers", "1", "--socket", sock, "--conn-capacity", "65536",
        ], ns=p.node(n))  # fmt: skip
        self._wait(lambda: "vgw-fwd ready" in log.read_text(errors="replace")[start:], 30, f"vgw-fwd on {node_id}",
                   poll_s=0.01)  # fmt: skip

    def _wait(self, ok: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> float:
        t0 = time.monotonic()
        last = t0
        while True:
            try:
                if ok():
                    return time.monotonic() - t0
            except Exception:
                pass
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise LabError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            if now - last >= 5:
                self.say(f"      ... still waiting for {what} ({now - t0:.0f}s)")
                last = now
            time.sleep(poll_s)

    # -- looking at it -----------------------------------------------------------------------------

    def vgwctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.state is not None
        # as `admin`: NATS and the config API (TLS, its client certificate and token)
        env = {**self._env(), **self.identity_env("admin"), "VGW_NATS_URL": self.state.nats_url,
               "VGW_CONFIG_ADDR": self.state.config_addr}  # fmt: skip
        return subprocess.run([str(BIN / "vgwctl"), *args], capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)  # fmt: skip

    def birdc(self, *args: str) -> str:
        assert self.state is not None
        r = subprocess.run(["birdc", "-s", str(Path(self.state.workdir) / "bird.ctl"), *args], capture_output=True,
                           text=True, timeout=10, check=False)  # fmt: skip
        return r.stdout

    def router_next_hops(self) -> set[str]:
        r = net.sh("ip", "-j", "route", "show", f"{VIP}/32", ns=self.plan.router, check=False)
        hops: set[str] = set()
        for route in json.loads(r.stdout or "[]"):
            if "gateway" in route:
                hops.add(route["gateway"])
            for nh in route.get("nexthops", []):
                hops.add(nh["gateway"])
        return hops

    def client_get(self, path: str = "/", timeout: float = 2.0) -> str | None:
        code = f"import urllib.request;print(urllib.request.urlopen('http://{VIP}{path}',timeout={timeout}).read().decode())"
        r = net.sh(sys.executable, "-c", code, ns=self.plan.client, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def metrics(self, service: str) -> str:
        assert self.state is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.state.metrics[service]}/metrics", timeout=3) as r:
            return str(r.read().decode())

    def status(self) -> dict[str, object]:
        if self.state is None:
            return {"lab": self.plan.id, "up": False}
        alive = procs.marked(self.plan.id)
        st: dict[str, object] = {
            "lab": self.plan.id, "up": True, "workdir": self.state.workdir, "nats": self.state.nats_url,
            "nats_servers": self.state.nats_servers, "js_replicas": self.state.js_replicas,
            "config": self.state.config_addr, "processes": len(alive),
            "security": self.state.security or "NONE (--insecure)",
            "vip": f"{VIP}:{VIP_PORT}", "router_next_hops": sorted(self.router_next_hops()),
            "client": CLIENT,
        }  # fmt: skip
        return st

    # -- down --------------------------------------------------------------------------------------

    def _stop_order(self) -> list[list[int]]:
        """What ``down`` stops after everything else, in turn: the shims, then the forwarders (as
        the systemd units stop), and the network last: NATS and the management-link relays, through
        which the services leave (e.g. a health checker's member key)."""
        if self.state is None:
            return []
        shims = [pid for n in NODES for pid in self.pids(f"shim-{n}")]
        fwds = [pid for n in NODES for pid in self.pids(f"fwd-{n}")]
        network = self.pids("nats") + [pid for n in NODES for pid in self.pids(f"mgmt-{n}")]
        return [shims, fwds, network]

    def down(self) -> dict[str, Any]:
        p = self.plan
        stopped, killed = procs.stop_all(p.id, p.namespaces(), after=self._stop_order())
        removed = net.destroy(p)
        dpdk = (
            [d for d in Path("/var/run/dpdk").glob(f"{p.file_prefix}-*") if d.is_dir()]
            if Path("/var/run/dpdk").exists()
            else []
        )
        for d in dpdk:
            shutil.rmtree(d, ignore_errors=True)
        hugepages = (
            [f for f in Path("/dev/hugepages").glob(f"{p.file_prefix}-*")] if Path("/dev/hugepages").exists() else []
        )
        for f in hugepages:
            f.unlink(missing_ok=True)
        # the forwarders' connection state (--conn-state auto, docs/forwarder.md "Restarts and
        # upgrades"): memory files that would hold their pages until removed
        conn_state = [d for base in CONN_STATE_BASES for d in Path(base).glob(f"{p.file_prefix}-*") if d.is_dir()]
        for d in conn_state:
            shutil.rmtree(d, ignore_errors=True)
        state_path(p.id).unlink(missing_ok=True)
        self.state = None
        return {"processes": stopped, "killed_after_grace": killed, "namespaces": removed,
                "dpdk_runtime_dirs": [str(d) for d in dpdk], "hugepage_files": [str(f) for f in hugepages],
                "conn_state_dirs": [str(d) for d in conn_state]}  # fmt: skip


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
