"""The vgw-healthcheck process against backends that misbehave: each is down with a clear reason,
and the service itself stays ready and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from tests.integration.test_bus import Collector
from tests.support.backends import HttpBackend, TcpBackend
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.config.store import ConfigStore
from vgw.events import BackendDown, BackendUp, ProbeResult

from .helpers import document, service


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


async def test_misbehaving_backends_are_down_with_reasons_and_the_service_stays_ready(
    bus: Bus, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    good = HttpBackend(200, b"ok").start()
    failing = HttpBackend(503, b"maintenance").start()
    garbage, hang, reset = [await TcpBackend(m).start() for m in ("garbage", "hang", "reset")]
    events = Collector()
    await bus.subscribe(events, types=[BackendDown, BackendUp])
    # fall 2 and a 1 s timeout: a loaded machine must not turn the good backend down by a slow probe
    check = {"name": "http", "kind": "http", "interval": 0.3, "timeout": 1.0, "rise": 1, "fall": 2, "jitter": 0}
    ports = {"good": good.port, "failing": failing.port, "garbage": garbage.port, "hang": hang.port,
             "reset": reset.port}  # fmt: skip
    await (await ConfigStore(bus).open()).commit(
        document([check], [service("web", 80, [("127.0.0.1", p) for p in ports.values()], check="http")]),
        actor="test",
    )
    metrics_port = free_port()
    # The backends are local servers: loopback addresses the config API would refuse (hence no recheck).
    env = {**child_env, "VGW_NATS_URL": nats_server.url, "VGW_CONFIG_RECHECK": "false", "VGW_INSTANCE_ID": "hc-x",
           "VGW_METRICS_ADDR": f"127.0.0.1:{metrics_port}"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "services.healthcheck.main"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        items = await events.wait_for(5, timeout=30)
        by_port = {r.event.backend.port: r.event for r in items}  # type: ignore[attr-defined]
        assert isinstance(by_port[ports["good"]], BackendUp)
        expected = {
            "failing": (ProbeResult.STATUS, "HTTP 503"),
            "garbage": (ProbeResult.PROTOCOL_ERROR, "not HTTP"),
            "hang": (ProbeResult.TIMEOUT, "no HTTP response"),
            "reset": (ProbeResult.RESET, "reset"),
        }
        for name, (reason, detail) in expected.items():
            ev = by_port[ports[name]]
            assert isinstance(ev, BackendDown) and ev.reason == reason and detail in ev.detail, (name, ev)
        await asyncio.sleep(1.0)
        assert len(events.items) == 5  # still misbehaving, still down: no more events
        assert await asyncio.to_thread(_status, metrics_port, "/readyz") == 200
        assert await asyncio.to_thread(_status, metrics_port, "/healthz") == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert proc.stderr is not None
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith(b"{")]
        assert not [r for r in logs if r["level"] == "error"], logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        good.stop()
        failing.stop()
        for b in (garbage, hang, reset):
            await b.stop()
