"""The service runner: readiness follows NATS, metrics and JSON logs with trace ids, events handled
end to end, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.test_bus import Collector, backend_down
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.events import VipWithdraw

HERE = Path(__file__).resolve().parent


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


async def _until(predicate: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
            await asyncio.sleep(0.1)


async def test_service_lifecycle(bus: Bus, nats_server: NatsServer, child_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**child_env, "VGW_NATS_URL": nats_server.url, "VGW_METRICS_ADDR": f"127.0.0.1:{port}"}
    log_path = tmp_path / "sample.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "sample_service.py")], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        await _until(lambda: _get(port, "/readyz")[0] == 200)
        assert _get(port, "/healthz")[0] == 200

        got = Collector()
        await bus.subscribe(got, types=[VipWithdraw])
        cause = await bus.publish(backend_down(1))
        [withdraw] = await got.wait_for(1)
        assert withdraw.event.cause_event_id == cause.id  # type: ignore[attr-defined]
        assert withdraw.meta.source.startswith("/vgw/sample/")
        _, metrics = _get(port, "/metrics")
        assert 'vgw_bus_received_messages_total{type="io.vgw.backend.down.v1"} 1.0' in metrics
        assert "vgw_bus_connected 1.0" in metrics

        nats_server.stop(kill=True)
        await _until(lambda: _get(port, "/readyz")[0] == 503)
        assert json.loads(_get(port, "/readyz")[1])["checks"]["nats"] == "NATS not connected"
        assert _get(port, "/healthz")[0] == 200  # alive, just not ready
        nats_server.start()
        await _until(lambda: _get(port, "/readyz")[0] == 200)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert records, log_path.read_text()
    assert all({"ts", "level", "service", "logger", "msg"} <= r.keys() for r in records)
    handled = next(r for r in records if r["msg"].startswith("withdrawing"))
    assert len(handled["trace_id"]) == 32 and handled["cause"] == cause.id
    msgs = [r["msg"] for r in records]
    assert any("SIGTERM received" in m for m in msgs) and msgs[-1] == "stopped"


def test_service_with_bad_setting_exits_2(child_env: dict[str, str]) -> None:
    env = {**child_env, "VGW_METRICS_ADDR": "not-an-address"}
    r = subprocess.run(
        [sys.executable, str(HERE / "sample_service.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "VGW_METRICS_ADDR" in r.stderr


async def test_service_waits_for_nats_and_stops_on_sigterm(child_env: dict[str, str]) -> None:
    port = free_port()
    env = {**child_env, "VGW_NATS_URL": f"nats://127.0.0.1:{free_port()}", "VGW_METRICS_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "sample_service.py")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await _until(lambda: _get(port, "/healthz")[0] == 200)
        assert _get(port, "/readyz")[0] == 503
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert proc.stdout is not None
        assert b"waiting for NATS" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
