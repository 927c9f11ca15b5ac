"""Fixtures: the real config service (``vgw-config``) in a subprocess against the test's nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.nats_server import NatsServer, free_port
from vgw.config.client import ConfigClient

REPO = Path(__file__).resolve().parents[2]


class ConfigService:
    """``python -m services.config.main`` on free ports; always stopped by its fixture."""

    def __init__(self, nats: NatsServer, workdir: Path, env: dict[str, str], **settings: str) -> None:
        self.nats = nats
        self.workdir = workdir
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **env,
            "VGW_NATS_URL": nats.url,
            "VGW_CONFIG_ADDR": f"127.0.0.1:{self.grpc_port}",
            "VGW_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "VGW_NATS_RECONNECT_WAIT_S": "0.2",
            "VGW_INSTANCE_ID": f"config-test-{self.grpc_port}",
            **{f"VGW_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"config-{self.grpc_port}.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def start(self, timeout_s: float = 20.0) -> ConfigService:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.config.main"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vgw-config exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if self.readyz() == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"vgw-config not ready in {timeout_s}s: {self.log.read_text()[-3000:]}")

    def stop(self, kill: bool = False) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


@pytest.fixture
def config_env(child_env: dict[str, str]) -> dict[str, str]:
    env = dict(child_env)
    env.pop("VGW_CONFIG_ADDR", None)
    return env


@pytest.fixture
def config_service(nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str]) -> Iterator[ConfigService]:
    svc = ConfigService(nats_server, tmp_path / "config", config_env).start()
    try:
        yield svc
    finally:
        svc.stop(kill=True)


@pytest.fixture
async def client(config_service: ConfigService) -> AsyncIterator[ConfigClient]:
    async with ConfigClient(config_service.addr, actor="tester") as c:
        yield c


def vgwctl_env(config_env: dict[str, str], svc: ConfigService) -> dict[str, str]:
    return {**config_env, "VGW_CONFIG_ADDR": svc.addr, "VGW_NATS_URL": svc.nats.url, "PATH": os.environ["PATH"]}


@pytest.fixture(scope="module")
def _shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigService]:
    """One nats-server + vgw-config for a whole module's read-mostly table tests (with the example
    document applied as revision 1)."""
    import yaml

    from tests.config.bad_documents import example

    work = tmp_path_factory.mktemp("shared-config")
    nats = NatsServer(work / "nats").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    svc = ConfigService(nats, work / "config", env)
    try:
        svc.start()

        async def seed() -> None:
            async with ConfigClient(svc.addr, actor="seed") as c:
                await c.apply(yaml.safe_dump(example()).encode(), reason="seed", expected_revision=0)

        asyncio.run(seed())
        yield svc
    finally:
        svc.stop(kill=True)
        nats.stop(kill=True)


@pytest.fixture
async def shared_client(_shared_service: ConfigService) -> AsyncIterator[ConfigClient]:
    async with ConfigClient(_shared_service.addr, actor="tester") as c:
        yield c
