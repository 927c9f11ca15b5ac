"""The ConfigService over real gRPC against the real vgw-config process and nats-server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import yaml

from tests.config.bad_documents import BAD, Bad, example
from tests.config.conftest import ConfigService
from vgw.config.client import ConfigApiError, ConfigClient
from vgw.config.v1 import config_pb2 as pb


def example_yaml() -> bytes:
    return yaml.safe_dump(example(), sort_keys=False).encode()


async def test_apply_get_list_history(client: ConfigClient, config_service: ConfigService) -> None:
    r = await client.apply(example_yaml(), reason="initial", expected_revision=0)
    assert (r.revision, r.committed) == (1, True)
    # No authentication configured, on loopback: the client's claim, marked as such.
    assert r.info.actor == "local:tester" and r.info.reason == "initial"
    assert r.counts.added > 0

    got = await client.get()
    assert got.revision == 1
    doc = yaml.safe_load(got.document)
    assert doc["vips"][0]["services"][0]["name"] == "www-http"
    # What Get returns applies again as "no change".
    again = await client.apply(got.document)
    assert (again.revision, again.committed) == (1, False)

    backends = await client.list("backends", service="www-http")
    assert [o.key for o in backends.objects] == [
        "www-http/198.51.100.21:8080",
        "www-http/198.51.100.22:8080",
        "www-http/198.51.100.23:8080",
    ]
    nodes = await client.list("nodes")
    assert [o.key for o in nodes.objects] == ["node-a", "node-b"]

    hist = await client.history()
    assert [h.revision for h in hist.revisions] == [1]
    assert "vgw_config_commits_total" in config_service.metrics()


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
async def test_bad_document_rejected_over_grpc(bad: Bad, shared_client: ConfigClient) -> None:
    before = await shared_client.history(limit=1)
    with pytest.raises(ConfigApiError) as info:
        await shared_client.apply(bad.text().encode(), reason="bad")
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(v.path == bad.path and bad.reason in v.reason for v in err.violations), err.violations
    after = await shared_client.history(limit=1)
    assert [h.revision for h in after.revisions] == [h.revision for h in before.revisions] == [1]


async def test_memory_budget_exactly_met_commits_and_one_short_changes_nothing(client: ConfigClient) -> None:
    """node-a of the example needs 106322496 bytes (worked out by hand in test_budget.py)."""
    doc = example()
    doc["nodes"][0]["forwarder"] = {"workers": 1, "memory_budget": 106322496}
    r = await client.apply(yaml.safe_dump(doc).encode(), reason="exact budget", expected_revision=0)
    assert (r.revision, r.committed) == (1, True)
    got = yaml.safe_load((await client.get()).document)
    assert got["nodes"][0]["forwarder"] == {"memory_budget": 106322496}  # defaults left out
    assert "forwarder" not in got["nodes"][1]

    doc["nodes"][0]["forwarder"] = {"memory_budget": "100Mi"}  # 104857600 bytes
    with pytest.raises(ConfigApiError) as info:
        await client.apply(yaml.safe_dump(doc).encode(), reason="too small")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    (v,) = info.value.violations
    assert v.path == "nodes[0].forwarder.memory_budget"
    assert v.reason.startswith("node node-a needs 101.4 MiB (106322496 bytes: ")
    assert "more than its memory budget of 100 MiB (104857600 bytes)" in v.reason
    hist = await client.history()
    assert [h.revision for h in hist.revisions] == [1]
    assert yaml.safe_load((await client.get()).document) == got


async def test_conflict_is_failed_precondition_with_revision(client: ConfigClient) -> None:
    await client.apply(example_yaml(), expected_revision=0)
    doc = example()
    doc["vips"][0]["services"][0]["backends"][0]["weight"] = 1
    with pytest.raises(ConfigApiError) as info:
        await client.apply(yaml.safe_dump(doc).encode(), expected_revision=0)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.current_revision == 1


async def test_concurrent_appliers_exactly_one_wins(config_service: ConfigService) -> None:
    async with ConfigClient(config_service.addr, actor="a") as a, ConfigClient(config_service.addr, actor="b") as b:
        await a.apply(example_yaml(), expected_revision=0)
        docs = []
        for w in (1, 2):
            d = example()
            d["vips"][0]["services"][0]["backends"][0]["weight"] = w
            docs.append(yaml.safe_dump(d).encode())
        results = await asyncio.gather(
            a.apply(docs[0], expected_revision=1), b.apply(docs[1], expected_revision=1), return_exceptions=True
        )
    wins = [r for r in results if isinstance(r, pb.ApplyResponse)]
    losses = [r for r in results if isinstance(r, ConfigApiError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert wins[0].revision == 2
    assert losses[0].code == grpc.StatusCode.FAILED_PRECONDITION and losses[0].current_revision == 2


async def test_backend_and_node_state_dry_run_and_rollback(client: ConfigClient) -> None:
    await client.apply(example_yaml(), expected_revision=0)
    r = await client.set_backend_state("198.51.100.21:8080", pb.BACKEND_STATE_DRAINING, service="www-http")
    assert r.revision == 2 and [c.path for c in r.changes] == ["services/www-http/backends/198.51.100.21:8080"]
    # Every service with that address: www-http is already draining, www-dns, echo-tcp and api-tcp change.
    r = await client.set_backend_state("198.51.100.21", pb.BACKEND_STATE_DISABLED)
    assert r.revision == 3 and len(r.changes) == 4
    with pytest.raises(ConfigApiError) as info:
        await client.set_backend_state("198.51.100.99:1", pb.BACKEND_STATE_DISABLED)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    r = await client.set_node_state("node-b", pb.NODE_STATE_ISOLATED, reason="maintenance")
    assert r.revision == 4 and r.info.action == "node_state" and r.info.reason == "maintenance"

    doc = example()
    doc["vips"][1]["services"][0]["port"] = 8443
    dry = await client.apply(yaml.safe_dump(doc).encode(), dry_run=True)
    assert dry.dry_run and not dry.committed and dry.revision == 4
    assert any(c.path == "services/api-tcp" for c in dry.changes)
    assert (await client.get()).revision == 4

    rb = await client.rollback(1, reason="undo all")
    assert rb.revision == 5 and rb.info.rolled_back_to == 1 and rb.info.action == "rollback"
    cur = yaml.safe_load((await client.get()).document)
    assert cur == yaml.safe_load((await client.get(1)).document)

    d = await client.diff(from_revision=1, to_revision=4)
    assert {c.path for c in d.changes} == {
        "services/www-http/backends/198.51.100.21:8080",
        "services/www-dns/backends/198.51.100.21:53",
        "services/echo-tcp/backends/198.51.100.21:9000",
        "services/api-tcp/backends/198.51.100.21:8443",
        "nodes/node-b",
    }


async def test_watch_stream(client: ConfigClient) -> None:
    seen: list[int] = []

    async def follow() -> None:
        async for msg in client.watch(include_document=True):
            seen.append(msg.revision)
            if msg.revision == 2:
                assert yaml.safe_load(msg.document)["nodes"][0]["state"] == "isolated"
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await client.apply(example_yaml())
    await client.set_node_state("node-a", pb.NODE_STATE_ISOLATED)
    async with asyncio.timeout(10):
        await task
    assert seen[0] in (0, 1) and seen[-1] == 2


async def test_bearer_token_and_health(nats_server: object, tmp_path: object, config_env: dict[str, str]) -> None:
    from pathlib import Path

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.support.nats_server import NatsServer

    assert isinstance(nats_server, NatsServer) and isinstance(tmp_path, Path)
    svc = ConfigService(nats_server, tmp_path / "tok", config_env, config_token="s3cret").start()
    try:
        async with ConfigClient(svc.addr) as anon:
            with pytest.raises(ConfigApiError) as info:
                await anon.history()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        async with ConfigClient(svc.addr, token="s3cret", actor="claimed") as ok:
            assert list((await ok.history()).revisions) == []
            r = await ok.apply(example_yaml(), reason="legacy token")
            assert r.info.actor == "token:token"  # the legacy token is admin, named "token"
            stub = health_pb2_grpc.HealthStub(ok.channel)
            resp = await stub.Check(health_pb2.HealthCheckRequest(service="vgw.config.v1.ConfigService"))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING

        def reflected() -> list[str]:
            from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
                ProtoReflectionDescriptorDatabase,
            )

            with grpc.insecure_channel(svc.addr) as ch:
                return list(ProtoReflectionDescriptorDatabase(ch).get_services())

        assert "vgw.config.v1.ConfigService" in await asyncio.to_thread(reflected)
    finally:
        svc.stop(kill=True)


async def test_tls(nats_server: object, tmp_path: object, config_env: dict[str, str]) -> None:
    from pathlib import Path

    from tests.support.backends import self_signed_cert
    from tests.support.nats_server import NatsServer

    assert isinstance(nats_server, NatsServer) and isinstance(tmp_path, Path)
    cert, key = self_signed_cert(tmp_path, name="localhost")
    svc = ConfigService(nats_server, tmp_path / "tls", config_env, config_tls_cert=str(cert), config_tls_key=str(key))
    svc.start()
    try:
        async with ConfigClient(f"localhost:{svc.grpc_port}", tls_ca=cert) as c:
            r = await c.apply(example_yaml(), reason="over tls")
            assert r.revision == 1
        async with ConfigClient(svc.addr, timeout_s=3) as plain:
            with pytest.raises(ConfigApiError) as info:
                await plain.history()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        svc.stop(kill=True)


async def test_calls_and_commits_are_traced_and_counted(
    nats_server: object, tmp_path: object, config_env: dict[str, str]
) -> None:
    import json as _json
    from pathlib import Path

    from tests.support.nats_server import NatsServer

    assert isinstance(nats_server, NatsServer) and isinstance(tmp_path, Path)
    trace_file = tmp_path / "spans.jsonl"
    svc = ConfigService(nats_server, tmp_path / "trace", {**config_env, "VGW_TRACE_FILE": str(trace_file)})
    svc.start()
    try:
        async with ConfigClient(svc.addr) as c:
            await c.apply(example_yaml(), reason="traced")
            with pytest.raises(ConfigApiError):
                await c.apply(b"version: 2\n")
        metrics = svc.metrics()
    finally:
        svc.stop()  # SIGTERM: spans are flushed on the way out
    assert 'vgw_config_grpc_requests_total{code="OK",method="Apply"} 1.0' in metrics
    assert 'vgw_config_grpc_requests_total{code="INVALID_ARGUMENT",method="Apply"} 1.0' in metrics
    assert 'vgw_config_commits_total{action="apply"} 1.0' in metrics
    assert "vgw_config_revision 1.0" in metrics
    spans = [_json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
    names = {s["name"] for s in spans}
    assert "/vgw.config.v1.ConfigService/Apply" in names and "config.commit" in names, names
    commit = next(s for s in spans if s["name"] == "config.commit")
    server = next(s for s in spans if s["name"] == "/vgw.config.v1.ConfigService/Apply")
    assert commit["context"]["trace_id"] == server["context"]["trace_id"]
    assert any(s["name"].startswith("send ") for s in spans)  # config.changed published in the same trace
