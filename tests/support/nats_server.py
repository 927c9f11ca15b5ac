"""A real nats-server with JetStream, on free ports, with its own store directory; and a cluster of
three of them (:class:`NatsCluster`).

The process is always stopped by the fixture that owns it, also when the test fails. It can be
killed and restarted on the same port and store to test reconnects and persistence.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, workdir: Path, name: str = "vgw-test") -> None:
        self.workdir = workdir
        self.store_dir = workdir / "jetstream"
        self.log_file = workdir / "nats-server.log"
        self.name = name
        self.port = free_port()
        self.monitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError("nats-server is not installed: run `make setup`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=0.5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not become healthy in {timeout_s}s: {self._log_tail()}")

    def command(self) -> list[str]:
        return [
            NATS_SERVER,
            "-js",
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-sd", str(self.store_dir),
            "-n", self.name,
            "-l", str(self.log_file),
        ]  # fmt: skip

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_file.read_text()[-n:]
        except OSError:
            return "(no log)"

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()


class ClusterNode(NatsServer):
    """One server of a :class:`NatsCluster`: the same process, plus a ``cluster {}`` block with routes
    to its peers, from a configuration file in its own directory."""

    def __init__(self, workdir: Path, name: str, cluster: str) -> None:
        super().__init__(workdir, name)
        self.cluster = cluster
        self.route_port = free_port()
        self.peers: list[ClusterNode] = []

    def command(self) -> list[str]:
        conf = self.workdir / "nats-server.conf"
        routes = ", ".join(f'"nats-route://127.0.0.1:{p.route_port}"' for p in self.peers)
        conf.write_text(
            f'server_name: "{self.name}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.monitor_port}"\n'
            f'jetstream {{ store_dir: "{self.store_dir}" }}\n'
            f'cluster {{ name: "{self.cluster}", listen: "127.0.0.1:{self.route_port}", routes: [{routes}] }}\n'
        )
        return [NATS_SERVER, "-c", str(conf), "-l", str(self.log_file)]

    def jsz(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=1) as r:
            return dict(json.loads(r.read()))


class NatsCluster:
    """Three (or ``size``) servers forming one JetStream cluster on loopback, each on free ports with
    its own store; ``stop`` kills every one of them, also after a failed start."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        tag = workdir.name[-8:].replace("_", "-") or "c"
        self.name = f"vgw-test-{tag}"
        self.nodes = [ClusterNode(workdir / f"n{i}", f"{self.name}-n{i}", self.name) for i in range(size)]
        for node in self.nodes:
            node.peers = [p for p in self.nodes if p is not node]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None]

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start()
            self.wait_meta_leader(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_meta_leader(self, timeout_s: float = 30.0) -> str:
        """Poll until every running server agrees on a JetStream meta leader; its server name."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                leaders = {n.jsz().get("meta_cluster", {}).get("leader") for n in self.running}
            except OSError:
                leaders = set()
            if len(leaders) == 1 and None not in leaders and "" not in leaders:
                return str(leaders.pop())
            time.sleep(0.1)
        raise RuntimeError(f"no JetStream meta leader in {timeout_s}s: {self.nodes[0]._log_tail()}")

    def node(self, server_name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == server_name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)
