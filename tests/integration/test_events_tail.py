"""`vgwctl events tail`: replay with --since, live events, filters, and clear errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_bus import backend_down, status
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import EVENT_STREAM, Bus
from vgw.events import ConfigChanged

VGWCTL = str(Path(sys.executable).parent / "vgwctl")


async def _tail(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, object]], str]:
    proc = await asyncio.create_subprocess_exec(
        VGWCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode or 0, lines, err.decode()


async def test_tail_since_shows_events_published_before_it_started(
    bus: Bus, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    metas = [
        await bus.publish(backend_down(1)),
        await bus.publish(status(7)),
        await bus.publish(ConfigChanged(revision=9, action="apply", actor="alice", reason="add backend")),
    ]
    code, lines, err = await _tail(
        child_env, "--nats", nats_server.url, "events", "tail", "--since", "5m", "--count", "3", "--timeout", "20s"
    )
    assert code == 0, err
    assert [line["id"] for line in lines] == [m.id for m in metas]
    assert [line["type"] for line in lines] == [
        "io.vgw.backend.down.v1",
        "io.vgw.dataplane.status.v1",
        "io.vgw.config.changed.v1",
    ]
    assert lines[2]["data"]["actor"] == "alice"
    assert lines[0]["nats_subject"] == "vgw.v1.backend.down.web.198-51-100-5_8001"
    assert lines[0]["source"] == "/vgw/tests/main"

    code, lines, err = await _tail(
        child_env, "--nats", nats_server.url, "events", "tail", "--since", "5m", "--type", "config.changed",
        "--timeout", "2s",
    )  # fmt: skip
    assert code == 0, err
    assert [line["type"] for line in lines] == ["io.vgw.config.changed.v1"]


async def test_tail_shows_live_events(bus: Bus, nats_server: NatsServer, child_env: dict[str, str]) -> None:
    consumers = (await bus.js.stream_info(EVENT_STREAM)).state.consumer_count
    proc = await asyncio.create_subprocess_exec(
        VGWCTL, "--nats", nats_server.url, "events", "tail", "--subject", "vgw.v1.dataplane.status.>",
        "--count", "2", "--timeout", "30s", stdout=asyncio.subprocess.PIPE, env=child_env,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while (await bus.js.stream_info(EVENT_STREAM)).state.consumer_count == consumers:
                await asyncio.sleep(0.05)
        await bus.publish(backend_down(1))  # filtered out by --subject
        await bus.publish(status(1))
        await bus.publish(status(2))
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert [json.loads(line)["data"]["seq"] for line in out.decode().splitlines()] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "tail", "--since", "5x"], "is not a duration"),
        (["events", "tail", "--type", "backend.exploded"], "unknown event type"),
        (["events", "tail", "--subject", "foo.>"], "is not under vgw.v1."),
        (["events", "tail", "--count", "0"], "--count must be at least 1"),
    ],
)
def test_tail_usage_errors_exit_2(child_env: dict[str, str], args: list[str], message: str) -> None:
    r = subprocess.run([VGWCTL, *args], env=child_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r


def test_tail_unreachable_nats_exits_3(child_env: dict[str, str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    r = subprocess.run(
        [VGWCTL, "--nats", url, "events", "tail"], env=child_env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 3 and "cannot reach NATS" in r.stderr, r
