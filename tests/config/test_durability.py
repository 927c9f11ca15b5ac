"""Atomicity as another process sees it, and durability across restarts of vgw-config and NATS."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.config.bad_documents import example
from tests.config.conftest import ConfigService
from tests.config.gen import generate
from tests.support.nats_server import NatsServer
from vgw.config.client import ConfigClient
from vgw.config.v1 import config_pb2 as pb

HERE = Path(__file__).resolve().parent


def _with_weight(raw: dict[str, object], w: int) -> bytes:
    for vip in raw["vips"]:  # type: ignore[attr-defined]
        for s in vip["services"]:
            for b in s["backends"]:
                b["weight"] = w
    return json.dumps(raw).encode()


async def test_watcher_process_sees_500_service_applies_whole(
    config_service: ConfigService, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "watcher_proc.py"), nats_server.url],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready = await asyncio.to_thread(proc.stdout.readline)
        assert json.loads(ready) == {"ready": True}, ready
        raw = generate(500, 10)
        async with ConfigClient(config_service.addr, actor="t") as c:
            # Alternate two 500-service documents that differ in every backend, then one that adds
            # 500 more services: each must be seen whole or not at all.
            for i in range(6):
                r = await c.apply(_with_weight(raw, 1 + i % 2), reason=f"w{1 + i % 2}")
                assert r.committed and r.revision == i + 1
            bigger = generate(1000, 10)
            r = await c.apply(_with_weight(bigger, 3), reason="w3")
            assert r.revision == 7
        seen: list[dict[str, object]] = []

        async def read_until_last() -> None:
            assert proc.stdout is not None
            while True:
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, proc.stderr.read() if proc.stderr else ""
                ev = json.loads(line)
                seen.append(ev)
                if ev["revision"] == 7:
                    return

        async with asyncio.timeout(30):
            await read_until_last()
    finally:
        proc.kill()
        proc.wait()
    revs = [e["revision"] for e in seen]
    assert revs == sorted(set(revs)), revs  # each revision once, in order
    assert len([r for r in revs if r]) >= 2, revs  # it followed the changes, not just the end state
    for e in seen:
        if e["revision"] == 0:
            assert e["services"] == 0
            continue
        expect_w = {"w1": [1], "w2": [2], "w3": [3]}[e["reason"]]  # type: ignore[index]
        expect_n = 1000 if e["reason"] == "w3" else 500
        assert e["weights"] == expect_w, e  # never a mix of two revisions
        assert (e["services"], e["backends"]) == (expect_n, expect_n * 10), e


async def test_history_survives_restarts_of_config_service_and_nats(
    config_service: ConfigService, nats_server: NatsServer
) -> None:
    async with ConfigClient(config_service.addr, actor="alice") as c:
        await c.apply(yaml.safe_dump(example()).encode(), reason="initial", expected_revision=0)
        await c.set_backend_state("198.51.100.23:8080", pb.BACKEND_STATE_DISABLED, reason="broken disk")
        await c.set_node_state("node-a", pb.NODE_STATE_ISOLATED, reason="maintenance")
        before = [(h.revision, h.action, h.actor, h.reason) for h in (await c.history()).revisions]
        doc2 = (await c.get(2)).document
    assert [b[0] for b in before] == [3, 2, 1]

    config_service.stop(kill=True)
    nats_server.restart(kill=True)  # same port, same JetStream store directory
    config_service.start()

    async with ConfigClient(config_service.addr, actor="bob") as c:
        after = [(h.revision, h.action, h.actor, h.reason) for h in (await c.history()).revisions]
        assert after == before
        assert (await c.get(2)).document == doc2
        rb = await c.rollback(2, reason="restore node-a")
        assert rb.revision == 4 and rb.committed
        assert [n.key for n in (await c.list("nodes")).objects] == ["node-a", "node-b"]
        nodes = [json.loads(n.json)["state"] for n in (await c.list("nodes")).objects]
        assert nodes == ["active", "active"]
        d = await c.diff(from_revision=1, to_revision=4)
        assert [ch.path for ch in d.changes] == ["services/www-http/backends/198.51.100.23:8080"]
