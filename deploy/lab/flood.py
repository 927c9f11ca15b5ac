"""The syn-flood scenario's tools: the spoofed-SYN generator (dataplane/build/vgw-synflood), run in
the client namespace towards the VIP, and the forwarders' flood counters, read from their control
sockets (the same STATS reply the shim exports as metrics, without the shim's one-second lag)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgw.fwdctl import FwdClient, FwdError, FwdUnavailableError

from . import net, procs
from .plan import FLOOD_SOURCES, NODES, VIP, VIP_PORT, Plan

REPO = Path(__file__).resolve().parents[2]
FLOOD_BIN = REPO / "dataplane" / "build" / "vgw-synflood"
SERVICE = "www-http"  # the flooded service: VIP:80 in docs/config-example.yaml


def router_mac(plan: Plan) -> str:
    """The router's MAC on the client link: the flood's frames are addressed to it, as a client's are."""
    r = net.sh("ip", "-j", "link", "show", plan.ifname("cr"), ns=plan.router)
    return str(json.loads(r.stdout)[0]["address"])


@dataclass
class Flood:
    """One run of vgw-synflood in the client namespace: spoofed SYNs to VIP:80 from FLOOD_SOURCES,
    bounded by ``duration_s`` (the tool stops by itself), ``rate_pps`` 0 = as fast as it can."""

    plan: Plan
    workdir: Path
    duration_s: float
    rate_pps: float = 0.0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.workdir / "synflood.json"

    def command(self) -> list[str]:
        # CPU 0: the forwarders' worker lcores run on CPU 1 (lab.start_forwarder), so the flood, and
        # the kernel's forwarding of it (same CPU: veth -> router -> node), leave them theirs.
        pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) > 1 else []
        return [
            "ip", "netns", "exec", self.plan.client, *pin,
            str(FLOOD_BIN), "--iface", self.plan.ifname("c"), "--dst-mac", router_mac(self.plan),
            "--dst", VIP, "--dport", str(VIP_PORT), "--src-net", FLOOD_SOURCES,
            "--duration", f"{self.duration_s:g}", "--rate", f"{self.rate_pps:g}",
        ]  # fmt: skip

    def start(self, env: dict[str, str]) -> Flood:
        cmd = self.command()
        with self.out.open("wb") as out, (self.workdir / "logs" / "synflood.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=log, env={**env, procs.MARKER: self.plan.id}, start_new_session=True
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> dict[str, Any]:
        """The generator's JSON line (sent, pps, ...), once it has stopped by itself."""
        assert self.proc is not None
        try:
            self.proc.wait(self.duration_s + 15)
        except subprocess.TimeoutExpired:
            self.stop()
        for line in reversed(self.out.read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                try:
                    return dict(json.loads(line))
                except ValueError:
                    break
        log = (self.workdir / "logs" / "synflood.log").read_text(errors="replace").strip().splitlines()
        return {"sent": 0, "pps": 0.0, "error": log[-1] if log else f"exit code {self.proc.returncode}"}

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def fwd_stats(socket: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """One STATS reply from a forwarder's control socket, or None if it does not answer."""

    async def once() -> dict[str, Any]:
        client = FwdClient(socket, timeout_s=timeout_s)
        try:
            return await client.stats()
        finally:
            await client.close()

    try:
        return asyncio.run(asyncio.wait_for(once(), timeout_s + 1))
    except (FwdError, FwdUnavailableError, OSError, TimeoutError, ValueError):
        return None


# What the scenario reads from each forwarder, summed over the nodes.
COUNTERS = ("conn_active", "conn_halfopen", "conn_new", "conn_evicted", "syn_cookie_sent", "syn_cookie_ok",
            "syn_cookie_bad", "drop_conn_table_full", "drop_no_lport", "drop_synproxy_bad_cookie")  # fmt: skip


@dataclass
class Sample:
    """The flood-relevant figures of both forwarders at one moment (summed), and which answered."""

    values: dict[str, float] = field(default_factory=dict)
    answered: list[str] = field(default_factory=list)
    syn_proxy_active: dict[str, float] = field(default_factory=dict)  # node -> gauge, when reported

    def get(self, key: str) -> float:
        return self.values.get(key, 0.0)


def sample(sockets: dict[str, str]) -> Sample:
    s = Sample()
    for n in NODES:
        st = fwd_stats(sockets[n]) if n in sockets else None
        if st is None:
            continue
        s.answered.append(n)
        counters = st.get("counters", {})
        for key in COUNTERS:
            s.values[key] = s.values.get(key, 0.0) + float(counters.get(key, 0))
        ext = st.get("ports", {}).get("ext", {})
        for key in ("rx_packets", "tx_packets", "nic_rx_missed"):
            s.values[f"ext_{key}"] = s.values.get(f"ext_{key}", 0.0) + float(ext.get(key, 0))
        svc = st.get("services", {}).get(SERVICE, {})
        s.values["svc_conn_active"] = s.values.get("svc_conn_active", 0.0) + float(svc.get("conn_active", 0))
        if "syn_proxy_active" in svc:
            s.syn_proxy_active[n] = float(svc["syn_proxy_active"])
    return s
