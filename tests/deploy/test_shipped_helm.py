"""The Helm chart's node DaemonSet, run for real: every container of the rendered pod -- init
containers, the forwarder, the shim, route control -- started with its exact command, arguments
and environment, for two nodes, in the lab's namespaces; a client's request through the VIP then
reaches a backend over the route BIRD learnt by BGP from each node. Deleting a node's pod (its
preStop hooks, then SIGTERM) withdraws the node's route before its forwarder stops.

The chart is rendered by Helm's engine (helm-python-sdk, as test_helm.py) with values a user sets:
``nats.enabled=false`` + ``natsUrl`` (the test's nats-server: TLS, client certificates, the
permission matrix of ``vgwctl security init``), ``security.existingSecret``, per node
``node.forwarder.eal`` (the EAL of the node's veths: af_packet, no hugepages, a unique file
prefix), ``node.forwarder.ext/int`` (net_af_packet0/1), ``node.forwarder.args`` (a smaller
connection table, as the lab), ``node.forwarder.connSyncKeySecret``, ``metricsPorts`` (free ports)
and ``node.routectl.env.VGW_EXABGP_NETNS``. The Kubernetes pieces are replaced as the kubelet would
fill them:

* volumes: each volumeMount's path -> a directory of the test (emptyDirs empty; the Secrets laid out
  key by key as deploy/helm/vgw-secrets.sh makes them from the lab's `vgwctl security init`
  output; the devices ConfigMap's data), in every argument and variable;
* ``$(VAR)`` and the downward API: spec.nodeName -> the node id, metadata.name -> a pod name;
* the image: its PATH (/opt/vgw/bin first) is this venv's bin;
* host networking: the forwarder runs in the node's namespace (its veths); NATS listens on this
  host's loopback, so the init container, the shim, route control and the forwarder's preStop run
  here, with route control's ExaBGP in the node's namespace (VGW_EXABGP_NETNS);
* ``VGW_METRICS_ADDR=0.0.0.0:P`` -> ``127.0.0.1:P``: nothing of the test listens beyond loopback;
* containers run as root here (the chart's securityContexts are checked by test_helm.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dataplane.shim.fwdprestop import routectl_running
from deploy.lab import procs
from deploy.lab.plan import NODES
from tests.deploy.common import CHART, render_chart
from tests.deploy.shipped import BASE_PATH, PathMap, Proc, ShippedLab, kube_expand, prereqs, shipped_lab

pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (make setup)")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(prereqs() is not None, reason=str(prereqs()))]

SECRETS_SCRIPT = CHART.parent / "vgw-secrets.sh"


def secret_dirs(s: ShippedLab) -> dict[str, Path]:
    """The Secrets the chart reads, as deploy/helm/vgw-secrets.sh creates them (kubectl recorded),
    each a directory with one file per key; and the connection-sync key's Secret."""
    log, fake = s.workdir / "kubectl.log", s.workdir / "kubectl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\necho END >> {log}\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(SECRETS_SCRIPT), str(s.security)], env={**os.environ, "KUBECTL": str(fake)},
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    out: dict[str, Path] = {}
    for call in log.read_text().split("END\n")[:-1]:
        args = call.splitlines()
        d = s.workdir / "k8s" / "secret" / args[3]
        d.mkdir(parents=True)
        for a in args:
            if a.startswith("--from-file="):
                key, path = a.removeprefix("--from-file=").split("=", 1)
                (d / key).write_bytes(Path(path).read_bytes())
                (d / key).chmod(0o440)
        out[args[3]] = d
    key_dir = s.workdir / "k8s" / "secret" / "vgw-conn-sync"
    key_dir.mkdir(parents=True)
    (key_dir / "conn-sync.key").write_text(os.urandom(16).hex() + "\n")
    (key_dir / "conn-sync.key").chmod(0o400)
    out["vgw-conn-sync"] = key_dir
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_values(s: ShippedLab, n: str, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "security": {"existingSecret": "vgw-security"},
        "nats": {"enabled": False},
        "natsUrl": s.nats_url,
        "metricsPorts": {"shim": ports["shim"], "routectl": ports["routectl"]},
        "node": {
            "forwarder": {
                "eal": s.eal(n), "ext": "net_af_packet0", "int": "net_af_packet1",
                "args": ["--conn-capacity", "65536"], "connSyncKeySecret": "vgw-conn-sync",
            },
            "routectl": {"env": {"VGW_EXABGP_NETNS": s.plan.node(n)}},
        },
    }  # fmt: skip


class Pod:
    """One node's pod of the rendered DaemonSet, its volumes on this machine."""

    def __init__(self, s: ShippedLab, n: str, docs: list[dict[str, Any]], secrets: dict[str, Path]) -> None:
        self.n, self.node_id, self.name, self.secrets = n, NODES[n][0], f"vgw-node-{n}", secrets
        (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
        self.spec = ds["spec"]["template"]["spec"]
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        self.volumes: dict[str, Path] = {}
        for v in self.spec["volumes"]:
            d = s.workdir / "k8s" / n / v["name"]
            if "secret" in v:
                d = secrets[v["secret"]["secretName"]]
            elif "configMap" in v:
                d.mkdir(parents=True)
                for key, text in configmaps[v["configMap"]["name"]]["data"].items():
                    (d / key).write_text(text)
            else:
                d.mkdir(parents=True)
                d.chmod(0o777)  # as the kubelet makes an emptyDir
            self.volumes[v["name"]] = d

    def containers(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in [*self.spec.get("initContainers", []), *self.spec["containers"]]}

    def proc(self, container: str, ns: str | None, argv: list[str] | None = None, name: str = "") -> Proc:
        c = self.containers()[container]
        paths = PathMap()
        for m in c.get("volumeMounts", []):
            paths.add(m["mountPath"], self.volumes[m["name"]])
        env = {"PATH": BASE_PATH}
        for e in c.get("env", []):
            if "value" in e:
                value = kube_expand(str(e["value"]), env)
            else:
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                value = {"spec.nodeName": self.node_id, "metadata.name": self.name}[field]
            env[e["name"]] = paths(value)
        if env.get("VGW_METRICS_ADDR", "").startswith("0.0.0.0:"):
            env["VGW_METRICS_ADDR"] = "127.0.0.1:" + env["VGW_METRICS_ADDR"].rsplit(":", 1)[1]
        raw = argv if argv is not None else [*c.get("command", []), *c.get("args", [])]
        return Proc(name or f"{container}-{self.n}", [paths(kube_expand(a, env)) for a in raw], env, ns)


class HelmNodes:
    """The starter of ShippedLab: each node's pod of the DaemonSet rendered for it."""

    def __init__(self) -> None:
        self.pods: dict[str, Pod] = {}

    def __call__(self, s: ShippedLab, n: str, role: str) -> None:
        if n not in self.pods:
            secrets = secret_dirs(s) if not self.pods else next(iter(self.pods.values())).secrets
            ports = {"shim": free_port(), "routectl": free_port()}
            self.pods[n] = Pod(s, n, render_chart(node_values(s, n, ports)), secrets)
        pod = self.pods[n]
        if role == "fwd":
            for c in pod.spec["initContainers"]:  # in order, each to completion, as the kubelet
                s.run_once(pod.proc(c["name"], ns=None))
            s.run_forwarder(n, pod.proc("fwd", ns=s.plan.node(n)))
        else:
            s.start_proc(pod.proc(role, ns=None))


def test_the_daemonset_forwards_for_every_node_and_withdraws_before_the_forwarder_stops() -> None:
    nodes = HelmNodes()
    with shipped_lab(nodes) as s:
        for n, pod in nodes.pods.items():
            assert [c["name"] for c in pod.spec["initContainers"]] == ["fwd-config", "conn-sync-key"]
            conf = (pod.volumes["fwd-conf"] / "fwd.conf").read_text().splitlines()
            # each node its own address and next hop, from its own entry in the config store
            assert f"ext net_af_packet0 {NODES[n][1]}/24" in conf, conf
            assert "route 0.0.0.0/0 192.0.2.1 ext" in conf
            assert conf[0].endswith("from config store revision 1"), conf[0]
        both = {addr for _id, addr in NODES.values()}
        assert s.router_next_hops() == both
        reply = s.client_get()
        assert reply is not None and reply.startswith("backend-"), reply

        # pod deletion on node a: every preStop hook at once, each container's SIGTERM when its own returns
        a = nodes.pods["a"]
        hook = a.containers()["fwd"]["lifecycle"]["preStop"]["exec"]["command"]
        prestop = a.proc("fwd", ns=None, argv=hook, name="fwd-a-prestop")
        url = prestop.argv[prestop.argv.index("--url") + 1]
        assert routectl_running(url), f"the hook watches {url}, where route control does not answer"

        def speakers() -> list[int]:
            return [pid for pid in procs.in_namespaces([s.plan.node("a")]) if b"exabgp" in cmdline(pid)]

        assert speakers(), "no ExaBGP in node a's namespace to watch"
        routectl, fwd = s.running.pop("routectl-a"), s.running.pop("fwd-a")
        t0 = time.monotonic()
        hook_proc = subprocess.Popen(prestop.argv, env=prestop.env, stderr=subprocess.PIPE, text=True)
        routectl.send_signal(signal.SIGTERM)  # route control has no preStop: SIGTERM at once
        _out, err = hook_proc.communicate(timeout=60)
        waited = time.monotonic() - t0
        assert hook_proc.returncode == 0, err
        # when the hook returned, route control had withdrawn and its BGP speaker was gone: ExaBGP (in
        # the node's namespace) exits only after the withdrawals, with a NOTIFICATION to the router
        assert speakers() == [], "the forwarder's preStop returned while node a's ExaBGP still ran"
        rc_log = s.log("routectl-a")
        assert re.search(r"shutting down: withdrawing [1-9]\d* VIP", rc_log), rc_log[-2000:]
        assert routectl.wait(timeout=10) == 0
        assert fwd.poll() is None  # the forwarder still forwards: its SIGTERM comes only now
        s.wait_for(lambda: s.router_next_hops() == {NODES["b"][1]}, 10, "node a's route to leave the router")
        assert fwd.poll() is None
        assert s.client_get() is not None  # clients carry on through node b
        fwd.send_signal(signal.SIGTERM)
        assert fwd.wait(timeout=30) == 0
        print(f"node a: the forwarder's preStop waited {waited:.1f}s for route control's withdrawal")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_rendered_devices_map_is_what_the_init_container_reads(tmp_path: Path) -> None:
    """The per-node devices of the values reach vgw-fwd-config unchanged (the ConfigMap's text)."""
    docs = render_chart({"security": {"existingSecret": "x"}, "node": {"devices": {"node-a": {"ext": "0000:3b:00.0"}}}})
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("node-devices")]
    path = tmp_path / "devices.yaml"
    path.write_text(cm["data"]["devices.yaml"])
    from dataplane.shim import fwdsource

    assert fwdsource.load_devices(str(path), "node-a") == ("0000:3b:00.0", None)
    assert fwdsource.load_devices(str(path), "node-b") == (None, None)
    assert yaml.safe_load(path.read_text()) == {"node-a": {"ext": "0000:3b:00.0"}}
