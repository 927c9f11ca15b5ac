"""The compose stack as shipped, run for real in containers (podman + podman-compose), forwarding a
client's request through the VIP. Runs in `make test-deploy` (it needs the images of
`make images`: minutes to build), not in `make test`.

The network, built by this test with a unique suffix per run:

    client ns 198.18.0.2 --- router ns (BIRD, AS 65000) --- node ns (the "Docker host")
                              192.0.2.1 / 198.18.0.1        192.0.2.11 on VGW_EXT_IFACE (kernel: BGP;
                              198.51.100.1                   DPDK: af_packet, the forwarder's port)
                                   |
                              backend nss 198.51.100.21, .22 (HTTP on 8080, the lab's backend)

podman-compose runs inside the node's network namespace (nsenter --net), so `network_mode: host`
is that namespace and the compose network (NATS x3, config, healthcheck) is a bridge inside it, with
its ports published on the namespace's loopback, exactly as on a Docker host. The forwarder is single-arm: backends and
clients are both beyond its gateway, so the request only comes back if fwd-config rendered the route.

What the test gives the stack, each a documented setting (compose.yaml's header, docs/deploy.md):
VGW_NODE_ID=node-a, VGW_EXT_IFACE (the test's veth), VGW_SECURITY_DIR (`vgwctl security init`
output in a temp dir), VGW_NATS_ROUTE_PASSWORD (random), VGW_NATS_IMAGE=localhost/vgw-nats:bookworm
(no registry here), VGW_FWD_FILE_PREFIX (unique per run), VGW_HUGEPAGES_DIR (a hugetlbfs mount of
its own, so the host's /dev/hugepages and other tests' forwarders are untouched), VGW_FWD_MEMLOCK,
VGW_FWD_NOFILE and VGW_FWD_NPROC (this machine's hard limits, lower than the defaults). Nothing else of the file
is changed.

Left out, said so: jaeger, prometheus and grafana (no image can be pulled here, and nothing in the
request path uses them; the services export to an absent OTLP endpoint, which they tolerate) and
monitor (on one host its vantage point is the node's own namespace, which has no path to the VIP
but through the forwarder it would judge: the lab tests it from outside).

podman-compose is PyPI's (a dev dependency): Debian's 1.0.3 adds the project network to a
`network_mode: host` service, which podman refuses. With podman 4.3 it cannot wait for the
depends_on conditions either: it skips `service_healthy` (podman < 4.6), and waits for
`service_completed_successfully` with `podman wait --condition=stopped`, which an exited container
never meets. So the test brings the stack up (`up --no-deps`) in the phases those conditions
define, waiting for each itself (the compose healthcheck via `podman healthcheck run`, fwd-config's
exit code), and stops routectl first with its stop_grace_period, as `docker compose down` does
(reverse dependency order).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.lab.servers import BACKEND, bird_config
from tests.deploy.common import COMPOSE, REPO, security_init_dir

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(
        os.environ.get("VGW_TEST_DEPLOY") != "1",
        reason="runs the shipped compose stack in containers: `make test-deploy` (builds the images first)",
    ),
]

NODE_ID = "node-a"  # deploy.lab.servers.bird_config peers with node-a at 192.0.2.11
NODE_ADDR = "192.0.2.11"
ROUTER_NODE_SIDE = "192.0.2.1"
ROUTER_CLIENT_SIDE = "198.18.0.1"
CLIENT = "198.18.0.2"
ROUTER_BACKEND_SIDE = "198.51.100.1"
BACKENDS = {"be1": "198.51.100.21", "be2": "198.51.100.22"}
LIP = "192.0.2.101"
VIP = "203.0.113.10"
NODE_ASN = 65010
EXT_IFACE = "vgwext"
IMAGES = ("localhost/vgw:dev", "localhost/vgw-node:dev", "localhost/vgw-nats:bookworm")
HUGEPAGES = 512  # 2 MiB pages for the forwarder (its memory budget below is 256 MiB)
CONTAINERS_CONF = REPO / "deploy" / "docker" / "containers.conf"
# PyPI's podman-compose (a dev dependency): Debian's 1.0.3 adds the project network to a
# `network_mode: host` service, which podman refuses
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"

# the documented way to apply a config: the shipped vgwctl service, as the admin identity
VGWCTL_APPLY = ("--profile", "tools", "run", "--rm", "-T", "--no-deps", "vgwctl", "apply", "-f", "-")

CONFIG = f"""
version: 1
clusters:
  - name: compose
nodes:
  - id: {NODE_ID}
    cluster: compose
    mode: single_arm
    external:
      address: {NODE_ADDR}/24
      gateway: {ROUTER_NODE_SIDE}
    lip_pool: [{LIP}]
    bgp:
      asn: {NODE_ASN}
      router_id: {NODE_ADDR}
      peers:
        - address: {ROUTER_NODE_SIDE}
          asn: 65000
          hold_time: 9
    forwarder:
      workers: 1
      conn_capacity: 65536
      memory_budget: 256Mi
health_checks:
  - name: web
    kind: http
    interval: 1s
    timeout: 500ms
    rise: 1
    fall: 2
    http: {{path: /healthz, expected_status: ["200"]}}
vips:
  - address: {VIP}
    name: www
    cluster: compose
    bgp:
      on_unhealthy: withdraw
      low_watermark: 1
      high_watermark: 1
    services:
      - name: www-http
        port: 80
        protocol: tcp
        scheduler: wrr
        health_check: web
        backends:
""" + "".join(f"          - {{address: {a}, port: 8080}}\n" for a in BACKENDS.values())


def run(
    *args: str, ns: str | None = None, check: bool = True, timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r  # type: ignore[no-any-return]


def wait_for(what: str, probe: Callable[[], object], deadline_s: float, diag: Callable[[], str] = str) -> object:
    """Poll probe until it returns something truthy; fail with diag() after deadline_s."""
    end = time.monotonic() + deadline_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f}s waiting for {what}\n{diag()}")
        time.sleep(0.5)


@dataclass
class Net:
    """The namespaces and links around the stack; removed by close() whatever happened."""

    suffix: str
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"vgwc{self.suffix}-{role}"

    def add_ns(self, role: str) -> str:
        name = self.ns(role)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, a: str, ns_a: str, b: str, ns_b: str) -> None:
        tmp_a, tmp_b = f"vc{self.suffix}a", f"vc{self.suffix}b"
        run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        run("ip", "link", "set", "dev", tmp_a, "netns", ns_a, "name", a)
        run("ip", "link", "set", "dev", tmp_b, "netns", ns_b, "name", b)
        for name, ns in ((a, ns_a), (b, ns_b)):
            run("ip", "-n", ns, "link", "set", "dev", name, "up")
            # af_packet hands DPDK exactly what the peer's kernel sent: no offloaded checksums
            run("ethtool", "-K", name, "tx", "off", "tso", "off", "gso", "off", ns=ns, check=False)

    def start(self, ns: str, *argv: str, log: Path) -> None:
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT)
            )

    def build(self, workdir: Path) -> None:
        router, client, node = self.add_ns("router"), self.add_ns("client"), self.add_ns("node")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
        self.veth("r-node", router, EXT_IFACE, node)
        run("ip", "-n", router, "addr", "add", f"{ROUTER_NODE_SIDE}/24", "dev", "r-node")
        run("ip", "-n", node, "addr", "add", f"{NODE_ADDR}/24", "dev", EXT_IFACE)
        # The host's own route to the backends (the healthcheck container's probes leave this way);
        # no default route: nothing sends VIP or client traffic through the host's kernel.
        run("ip", "-n", node, "route", "add", "198.51.100.0/24", "via", ROUTER_NODE_SIDE)
        self.veth("r-client", router, "c", client)
        run("ip", "-n", router, "addr", "add", f"{ROUTER_CLIENT_SIDE}/24", "dev", "r-client")
        run("ip", "-n", client, "addr", "add", f"{CLIENT}/24", "dev", "c")
        run("ip", "-n", client, "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
        run("ip", "-n", router, "link", "add", "br-be", "type", "bridge")
        run("ip", "-n", router, "addr", "add", f"{ROUTER_BACKEND_SIDE}/24", "dev", "br-be")
        run("ip", "-n", router, "link", "set", "br-be", "up")
        for name, addr in BACKENDS.items():
            ns = self.add_ns(name)
            self.veth(f"r-{name}", router, "b", ns)
            run("ip", "-n", router, "link", "set", "dev", f"r-{name}", "master", "br-be")
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "b")
            run("ip", "-n", ns, "route", "add", "default", "via", ROUTER_BACKEND_SIDE)
            self.start(ns, shutil.which("python3") or "python3", "-c", BACKEND, name, log=workdir / f"{name}.log")
        (workdir / "bird.conf").write_text(bird_config(NODE_ASN))
        self.start(
            router,
            "bird",
            "-f",
            "-c",
            str(workdir / "bird.conf"),
            "-s",
            str(workdir / "bird.ctl"),
            log=workdir / "bird.log",
        )

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)


@dataclass
class Hugepages:
    """A hugetlbfs mount of the test's own, with pages reserved for it (and given back)."""

    mount: Path
    before: int = 0
    reserved: bool = False
    mounted: bool = False
    nr = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")

    def __post_init__(self) -> None:
        self.before = int(self.nr.read_text())
        self.nr.write_text(str(self.before + HUGEPAGES))
        self.reserved = True
        self.mount.mkdir(parents=True)
        run("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(self.mount))
        self.mounted = True

    def close(self) -> None:
        if self.mounted:
            # Empty it first: a namespace created meanwhile (`ip netns exec` elsewhere) holds a copy of
            # the mount, and only removing the files gives the pages back.
            for entry in self.mount.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            run("umount", str(self.mount), check=False)
        if self.reserved:
            self.nr.write_text(str(self.before))


@dataclass
class Stack:
    """podman-compose with the shipped compose.yaml, run inside the node namespace."""

    project: str
    ns: str
    env: dict[str, str]

    def _in_ns(self) -> list[str]:
        # Only the network namespace: `ip netns exec` would also remount /sys, hiding the cgroup
        # mounts the OCI runtime needs.
        return ["nsenter", f"--net=/run/netns/{self.ns}"]

    def compose(self, *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None) -> str:
        r = run(
            *self._in_ns(),
            str(PODMAN_COMPOSE),
            "-p",
            self.project,
            "-f",
            str(COMPOSE),
            *args,
            check=check,
            timeout=timeout,
            env=self.env,
            input=stdin,
        )
        return r.stdout + r.stderr

    def up(self, *services: str) -> None:
        """`up -d` of exactly these services, in depends_on order; the caller waits for conditions."""
        out = self.compose("up", "-d", "--no-build", "--no-deps", *services)
        absent = [s for s in services if self.state(s) == "absent"]
        assert not absent, f"not created: {absent}\n" + "\n".join(out.splitlines()[-30:])

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(*self._in_ns(), "podman", *args, check=check, timeout=timeout, env=self.env)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"  # podman-compose 1.0.3's naming

    def state(self, service: str) -> str:
        r = self.podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", self.container(service), check=False)
        return r.stdout.strip() if r.returncode == 0 else "absent"

    def logs(self, *services: str) -> str:
        out = []
        for s in services:
            r = self.podman("logs", "--tail", "25", self.container(s), check=False)
            out.append(f"--- {s} ({self.state(s)}) ---\n{r.stdout}{r.stderr}")
        return "\n".join(out)

    def down(self) -> None:
        """Everything of the project goes, even what podman-compose lost track of."""
        with contextlib.suppress(Exception):
            self.compose("down", "-v", "-t", "5", check=False, timeout=180)
        label = f"io.podman.compose.project={self.project}"
        ids = self.podman("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, check=False)
        for kind in ("pod", "network", "volume"):
            names = self.podman(kind, "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
            if names:
                self.podman(kind, "rm", "-f", *names, check=False)


def hard_limit(which: int) -> int:
    hard = resource.getrlimit(which)[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def stream_replicas(stack: Stack) -> dict[str, int]:
    """Each JetStream stream's replica count, from nats-1's monitoring endpoint."""
    url = "http://127.0.0.1:8222/jsz?streams=true&config=true"
    out = stack.podman("exec", stack.container("nats-1"), "wget", "-qO-", url).stdout
    streams = [s for a in json.loads(out).get("account_details", []) for s in a.get("stream_detail", [])]
    return {s["name"]: int(s["config"]["num_replicas"]) for s in streams}


def birdc(workdir: Path, *args: str) -> str:
    return run("birdc", "-s", str(workdir / "bird.ctl"), *args, check=False).stdout


def vip_route(net: Net, workdir: Path) -> bool:
    return f"via {NODE_ADDR}" in run("ip", "-n", net.ns("router"), "route", "show", f"{VIP}/32", check=False).stdout


def curl_vip(net: Net) -> str | None:
    r = run("curl", "-sS", "--max-time", "3", f"http://{VIP}/", ns=net.ns("client"), check=False)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[tuple[Net, Stack, Path]]:
    for tool in ("podman", str(PODMAN_COMPOSE), "bird", "birdc", "curl", "ethtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (`make test-deploy` installs it)")
    missing = [i for i in IMAGES if run("podman", "image", "exists", i, check=False).returncode != 0]
    if missing:
        pytest.fail(f"images missing: {missing} (`make images` builds them)")
    suffix = secrets.token_hex(3)
    net = Net(suffix)
    hp = None
    stack = None
    try:
        net.build(tmp_path)
        hp = Hugepages(tmp_path / "hugepages")
        init_dir = security_init_dir()
        sec = tmp_path / "security"
        init_dir(
            sec,
            nodes=[NODE_ID],
            nats_hosts=["nats-1", "nats-2", "nats-3", "localhost", "127.0.0.1"],
            config_api_hosts=["config", "localhost", "127.0.0.1"],
            path_prefix="/etc/vgw/security",
        )
        # the containers' uid reads its 0600 files (compose.yaml's header says the same)
        for sub in ("identities", "config-api"):
            run("chown", "-R", "10001:10001", str(sec / sub))
        run("chown", "-R", "0:0", str(sec / "identities" / f"shim-{NODE_ID}"))
        env = {
            **os.environ,
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            "VGW_NODE_ID": NODE_ID,
            "VGW_EXT_IFACE": EXT_IFACE,
            "VGW_SECURITY_DIR": str(sec),
            "VGW_NATS_ROUTE_PASSWORD": secrets.token_hex(24),
            "VGW_NATS_IMAGE": "localhost/vgw-nats:bookworm",
            "VGW_FWD_FILE_PREFIX": f"vgwc{suffix}",
            "VGW_HUGEPAGES_DIR": str(hp.mount),
            # within this machine's hard limits, which no container engine can raise
            "VGW_FWD_MEMLOCK": str(hard_limit(resource.RLIMIT_MEMLOCK)),
            "VGW_FWD_NOFILE": str(min(65536, hard_limit(resource.RLIMIT_NOFILE))),
            "VGW_FWD_NPROC": "4096",  # 65536 is refused here although below the hard limit
        }
        stack = Stack(f"vgwc{suffix}", net.ns("node"), env)
        yield net, stack, tmp_path
    finally:
        if stack is not None:
            stack.down()
        if hp is not None:
            hp.close()
        net.close()


@pytest.mark.timeout(900)
def test_the_compose_stack_forwards_a_client_request_through_the_vip(environment: tuple[Net, Stack, Path]) -> None:
    net, stack, workdir = environment
    node_ns = net.ns("node")
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[compose run {time.monotonic() - t0:5.1f}s] {msg}", flush=True)

    # 1. NATS: three servers, until each passes the compose file's own healthcheck
    stack.up("nats-1", "nats-2", "nats-3")

    def healthy(service: str) -> bool:
        return stack.podman("healthcheck", "run", stack.container(service), check=False).returncode == 0

    for n in ("nats-1", "nats-2", "nats-3"):
        wait_for(f"{n} healthy", functools.partial(healthy, n), 90, lambda: stack.logs("nats-1", "nats-2", "nats-3"))
    # The host's kernel must not forward what arrives for the forwarder (LIP replies, which are in
    # its connected subnet): podman's bridge turned ip_forward on, so the host drops new flows
    # coming in on the port, and keeps the replies of its containers' own (the health probes).
    new_flows = ["-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED"]
    run("iptables", "-I", "FORWARD", "-i", EXT_IFACE, *new_flows, "-j", "DROP", ns=node_ns)

    say("NATS cluster healthy")
    # 2. the control plane, and the config applied by the shipped vgwctl service (admin identity)
    stack.up("config", "healthcheck")

    applied: list[str] = []

    def apply() -> bool:
        out = stack.compose(*VGWCTL_APPLY, check=False, stdin=CONFIG)
        applied.append(out)
        return "revision" in out and "error" not in out.lower()

    wait_for("vgwctl apply through the config service", apply, 120, lambda: applied[-1] + stack.logs("config"))

    say("config applied")
    # 3. the node's bootstrap renders the forwarder's settings from the config in NATS, and exits 0
    stack.up("fwd-config")
    wait_for(
        "fwd-config to finish",
        lambda: stack.state("fwd-config").startswith("exited"),
        120,
        lambda: stack.logs("fwd-config"),
    )
    assert stack.state("fwd-config") == "exited 0", stack.logs("fwd-config")
    volume = stack.podman("volume", "inspect", "-f", "{{.Mountpoint}}", f"{stack.project}_vgw-run").stdout.strip()
    settings = Path(volume, "fwd.conf").read_text()
    assert f"ext net_af_packet0 {NODE_ADDR}/24" in settings, settings
    assert f"route 0.0.0.0/0 {ROUTER_NODE_SIDE} ext" in settings, settings  # what compose lacked before

    say("fwd-config rendered the settings")
    # 4. the node: forwarder, shim, route control
    stack.up("fwd", "shim", "routectl")
    wait_for(
        "the VIP announced to BIRD and in the router's FIB",
        lambda: vip_route(net, workdir),
        180,
        lambda: birdc(workdir, "show", "protocols") + stack.logs("fwd", "shim", "routectl", "healthcheck"),
    )
    say("VIP announced")
    body = wait_for("a client request through the VIP", lambda: curl_vip(net), 30, lambda: stack.logs("fwd", "shim"))
    assert body in BACKENDS, body
    seen = {curl_vip(net) for _ in range(20)}
    assert seen == set(BACKENDS), seen  # every request answered, by both backends (wrr)
    up_s = time.monotonic() - t0
    # VGW_JS_REPLICAS=3 took effect: the config bucket and the event stream are on all three servers
    replicas = stream_replicas(stack)
    assert replicas.get("KV_vgw_config") == 3 and replicas.get("VGW_EVENTS") == 3, replicas

    say("client requests through the VIP answered")
    # 5. stopping: route control first (it depends on fwd and shim), with its stop_grace_period:
    # the VIP is withdrawn while the forwarder still runs
    stack.podman("stop", "-t", "15", stack.container("routectl"))
    assert stack.state("routectl").startswith("exited"), stack.logs("routectl")
    wait_for("the VIP withdrawn", lambda: not vip_route(net, workdir), 10, lambda: birdc(workdir, "show", "route"))
    assert stack.state("fwd").startswith("running"), stack.logs("fwd")
    print(f"compose stack up and serving through the VIP in {up_s:.0f}s")
