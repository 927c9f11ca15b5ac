"""A vgw-shim process for the shim suites, and what they feed it: one node's config in the config
store and its backends' health in ``vgw_health``, written the way the config and healthcheck
services write them; the shim runs as a real subprocess, stopped (SIGTERM, then SIGKILL) even when
the test fails."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.forwarder.fwdproc import stop_session
from tests.forwarder.topology import BACKEND_IPS, EXT_IP, INT_IP, LIP, VIP
from tests.support.health import health_entry
from vgw.bus import Bus
from vgw.config.store import ConfigStore
from vgw.config.validate import load_document
from vgw.events import BackendState
from vgw.health import HEALTH_BUCKET, HealthEntry, health_key
from vgw.store import KvStore

CHECK = "web-tcp"


def shim_config(node: str) -> str:
    """The lab's one node with service web on the VIP over the three backends, checked by CHECK."""
    backends = "".join(f"          - {{address: {ip}, port: 80}}\n" for ip in BACKEND_IPS)
    return f"""
version: 1
clusters: [{{name: lab}}]
nodes:
  - id: {node}
    cluster: lab
    external: {{address: {EXT_IP}/24}}
    internal: {{address: {INT_IP}/24}}
    lip_pool: [{LIP}]
health_checks:
  - {{name: {CHECK}, kind: tcp, interval: 1s}}
vips:
  - address: {VIP}
    cluster: lab
    services:
      - name: web
        port: 80
        scheduler: wrr
        health_check: {CHECK}
        backends:
{backends}"""


def health(ip: str, state: BackendState) -> HealthEntry:
    return health_entry(ip, 80, CHECK, state)


async def seed(bus: Bus, node: str, reason: str) -> tuple[int, KvStore[HealthEntry]]:
    """Commit the node's config and every backend up; returns the config revision and the health
    bucket (for the test's own later state changes)."""
    result = await (await ConfigStore(bus).open()).commit(load_document(shim_config(node)), actor="test", reason=reason)
    hkv = await KvStore.open(bus, HEALTH_BUCKET, HealthEntry)
    for ip in BACKEND_IPS:
        await hkv.put(health_key(ip, 80, CHECK), health(ip, BackendState.UP))
    return result.revision, hkv


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """pred() (awaited when it returns a coroutine) again every step until it is truthy; returns that
    value, fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


@contextlib.contextmanager
def vgw_shim(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m dataplane.shim.main`` with env (its stderr to log) in a session of its own."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataplane.shim.main"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_session(proc)
