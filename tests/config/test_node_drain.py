"""Node state ``draining`` through the real config service: SetNodeState(DRAINING) for a node or a
cluster, its parameters and history, restore, the blast-radius guard, bad input (a clear error and
nothing changed), and vgwctl's node/cluster drain commands (without route control: --no-wait)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import yaml

from tests.config.conftest import ConfigService
from tests.routectl.harness import make_doc
from vgw.cli.main import main as vgwctl_main
from vgw.config.client import ConfigApiError, ConfigClient
from vgw.config.v1 import config_pb2 as pb

VIP_C2 = "203.0.113.20"


def two_clusters() -> dict[str, Any]:
    """Cluster c1 (n1, n2) serves 203.0.113.10; cluster c2 (n3 alone) serves 203.0.113.20."""
    doc = make_doc(3).model_dump(mode="json", exclude_none=True)
    doc["clusters"].append({"name": "c2"})
    doc["nodes"][2]["cluster"] = "c2"
    vip = json.loads(json.dumps(doc["vips"][0]))
    vip.update(address=VIP_C2, cluster="c2")
    vip["services"][0]["name"] = "web2"
    doc["vips"].append(vip)
    return doc


async def nodes(c: ConfigClient) -> dict[str, dict[str, Any]]:
    return {(n := json.loads(o.json))["id"]: n for o in (await c.list("nodes")).objects}


async def revision(c: ConfigClient) -> int:
    return int((await c.history(limit=1)).revisions[0].revision)


async def refused(call: Any, code: grpc.StatusCode) -> ConfigApiError:
    with pytest.raises(ConfigApiError) as info:
        await call
    assert info.value.code == code, info.value
    return info.value


async def test_drain_a_node_then_restore(client: ConfigClient) -> None:
    await client.apply(yaml.safe_dump(two_clusters()).encode(), reason="seed")
    before = datetime.now(UTC)
    r = await client.set_node_state(
        "n1", pb.NODE_STATE_DRAINING, reason="kernel upgrade", drain_timeout_s=120, drain_threshold=5
    )
    assert r.committed and r.revision == 2
    n1 = (await nodes(client))["n1"]
    assert n1["state"] == "draining"
    started = datetime.fromisoformat(n1["drain"]["started_at"])
    assert before - timedelta(seconds=5) <= started <= datetime.now(UTC) + timedelta(seconds=5)
    assert n1["drain"]["timeout"] == 120 and n1["drain"]["threshold"] == 5
    h = (await client.history(limit=1)).revisions[0]
    assert (h.action, h.actor, h.reason) == ("node_state", "local:tester", "kernel upgrade")
    assert "nodes/n1" in list(h.changed)

    # Draining again keeps the start; a new timeout counts from it. The same again changes nothing.
    r = await client.set_node_state("n1", pb.NODE_STATE_DRAINING, drain_timeout_s=600)
    assert r.committed
    again = (await nodes(client))["n1"]["drain"]
    assert again["started_at"] == n1["drain"]["started_at"] and again["timeout"] == 600 and again["threshold"] == 5
    r = await client.set_node_state("n1", pb.NODE_STATE_DRAINING)
    assert not r.committed

    # The document with a drain round-trips through `get config` (YAML) and apply unchanged.
    got = await client.get(0, pb.DOCUMENT_FORMAT_YAML)
    r = await client.apply(got.document)
    assert not r.committed, list(r.changes)

    # Defaults: 300 s, threshold 1.
    await client.set_node_state("n1", pb.NODE_STATE_ACTIVE)
    r = await client.set_node_state("n1", pb.NODE_STATE_DRAINING)
    d = (await nodes(client))["n1"]["drain"]
    assert (d["timeout"], d["threshold"]) == (300, 1)

    # Restore ends the drain: active, no drain record; restoring an active node changes nothing.
    r = await client.set_node_state("n1", pb.NODE_STATE_ACTIVE, reason="upgrade done")
    assert r.committed
    n1 = (await nodes(client))["n1"]
    assert n1["state"] == "active" and n1.get("drain") is None
    assert not (await client.set_node_state("n1", pb.NODE_STATE_ACTIVE)).committed


async def test_bad_drain_input_is_refused_and_changes_nothing(client: ConfigClient) -> None:
    await client.apply(yaml.safe_dump(two_clusters()).encode(), reason="seed")
    await client.set_node_state("n2", pb.NODE_STATE_ISOLATED)
    rev = await revision(client)
    drain = pb.NODE_STATE_DRAINING

    e = await refused(client.set_node_state("n9", drain), grpc.StatusCode.NOT_FOUND)
    assert "unknown node 'n9'" in e.message
    e = await refused(client.set_node_state("n1", drain, drain_timeout_s=-5), grpc.StatusCode.INVALID_ARGUMENT)
    assert "-5s is out of range: 1s to 24h" in e.message and e.violations[0].path == "drain.timeout_s"
    e = await refused(client.set_node_state("n1", drain, drain_timeout_s=10 * 86400), grpc.StatusCode.INVALID_ARGUMENT)
    assert "864000s is out of range" in e.message
    e = await refused(client.set_node_state("n1", drain, drain_timeout_s=0.2), grpc.StatusCode.INVALID_ARGUMENT)
    e = await refused(
        client.set_node_state("n1", drain, drain_timeout_s=float("nan")), grpc.StatusCode.INVALID_ARGUMENT
    )
    e = await refused(client.set_node_state("n1", drain, drain_threshold=2**40), grpc.StatusCode.INVALID_ARGUMENT)
    assert "more than a node can hold" in e.message
    e = await refused(
        client.set_node_state("n1", pb.NODE_STATE_ISOLATED, drain_timeout_s=60), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "DRAINING only" in e.message
    e = await refused(client.set_node_state("n2", drain), grpc.StatusCode.FAILED_PRECONDITION)
    assert "node n2 is isolated" in e.message and "vgwctl node restore n2" in e.message
    e = await refused(client.set_node_state("n1", drain, cluster="c1"), grpc.StatusCode.INVALID_ARGUMENT)
    e = await refused(client.set_node_state("", pb.NODE_STATE_ISOLATED, cluster="c1"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "not isolated" in e.message
    e = await refused(client.set_node_state("", drain, cluster="c9"), grpc.StatusCode.NOT_FOUND)
    assert "unknown cluster 'c9'" in e.message

    # A document that says draining without the drain (or a drain on an active node) is invalid.
    doc = two_clusters()
    doc["nodes"][0]["state"] = "draining"
    e = await refused(client.apply(yaml.safe_dump(doc).encode()), grpc.StatusCode.INVALID_ARGUMENT)
    assert e.violations[0].path == "nodes[0]" and "vgwctl node drain" in e.violations[0].reason
    doc["nodes"][0]["state"] = "active"
    doc["nodes"][0]["drain"] = {"started_at": "2026-12-01T10:00:00Z", "timeout": "5m"}
    e = await refused(client.apply(yaml.safe_dump(doc).encode()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "only while state is draining" in e.violations[0].reason
    doc["nodes"][0]["state"] = "draining"
    doc["nodes"][0]["drain"] = {"started_at": "yesterday", "timeout": "5m"}
    e = await refused(client.apply(yaml.safe_dump(doc).encode()), grpc.StatusCode.INVALID_ARGUMENT)
    assert e.violations[0].path == "nodes[0].drain.started_at"

    assert await revision(client) == rev
    states = {k: (n["state"], n.get("drain")) for k, n in (await nodes(client)).items()}
    assert states == {"n1": ("active", None), "n2": ("isolated", None), "n3": ("active", None)}


async def test_the_last_active_node_of_a_vip_needs_force(client: ConfigClient) -> None:
    await client.apply(yaml.safe_dump(two_clusters()).encode(), reason="seed")
    drain = pb.NODE_STATE_DRAINING
    await client.set_node_state("n1", drain)
    rev = await revision(client)
    e = await refused(client.set_node_state("n2", drain), grpc.StatusCode.FAILED_PRECONDITION)
    assert "would leave 1 VIP(s) with no active node" in e.message and "203.0.113.10" in e.message
    assert "force" in e.message and e.violations[0].path == "vips/203.0.113.10"
    # The only node of cluster c2, as a cluster drain: refused too.
    e = await refused(client.set_node_state("", drain, cluster="c2"), grpc.StatusCode.FAILED_PRECONDITION)
    assert VIP_C2 in e.message
    assert await revision(client) == rev

    r = await client.set_node_state("", drain, cluster="c2", force=True, reason="planned: whole cluster")
    assert r.committed
    assert (await nodes(client))["n3"]["state"] == "draining"
    # Cluster restore: its draining nodes become active.
    await client.set_node_state("", pb.NODE_STATE_ACTIVE, cluster="c2")
    assert (await nodes(client))["n3"]["state"] == "active"

    # Cluster c1 with n2 isolated: the drain covers n1 only (already draining: kept), isolated stays.
    await client.set_node_state("n1", pb.NODE_STATE_ACTIVE)
    await client.set_node_state("n2", pb.NODE_STATE_ISOLATED)
    e = await refused(client.set_node_state("", drain, cluster="c1"), grpc.StatusCode.FAILED_PRECONDITION)
    r = await client.set_node_state("", drain, cluster="c1", force=True, drain_timeout_s=60)
    assert r.committed
    got = await nodes(client)
    assert (got["n1"]["state"], got["n2"]["state"], got["n3"]["state"]) == ("draining", "isolated", "active")
    await client.set_node_state("", pb.NODE_STATE_ACTIVE, cluster="c1")
    got = await nodes(client)
    assert (got["n1"]["state"], got["n2"]["state"]) == ("active", "isolated")


def ctl(svc: ConfigService, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = vgwctl_main([*args, "--config-addr", svc.addr])
    except SystemExit as exc:  # argparse refuses the usage
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_vgwctl_node_and_cluster_drain_no_wait(
    config_service: ConfigService, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process: `--nats` would set VGW_NATS_URL for the rest of the session; monkeypatch undoes it.
    monkeypatch.setenv("VGW_NATS_URL", config_service.nats.url)
    doc = tmp_path / "doc.yaml"
    doc.write_text(yaml.safe_dump(two_clusters()))
    assert ctl(config_service, capsys, "apply", "-f", str(doc))[0] == 0

    code, out, err = ctl(
        config_service, capsys, "node", "drain", "n1", "--timeout", "90s", "--threshold", "3", "--no-wait"
    )
    assert code == 0, err
    assert out.startswith("node n1: drain: revision 2 (was 1)")
    assert "node n1 draining since" in out and "fewer than 3 connections, withdrawn after 90s" in out
    code, out, err = ctl(config_service, capsys, "node", "drain", "n2", "--no-wait", "-o", "json")
    assert code == 4, (out, err)
    assert json.loads(out)["error"] == "FAILED_PRECONDITION"
    assert "no active node" in err and "force" in err

    # vgwctl status: n1 draining (route control has not reported anything: none runs here).
    code, out, err = ctl(config_service, capsys, "status", "-o", "json")
    assert code == 0, err
    st = {n["id"]: n for n in json.loads(out)["nodes"]}
    assert st["n1"]["state"] == "draining" and st["n1"]["drain"]["phase"] == "draining"
    assert st["n1"]["drain"]["reported"] is False and st["n2"]["drain"] is None
    code, out, _ = ctl(config_service, capsys, "status")
    assert "n1    c1       draining" in out

    # Bad input: clear error, exit code, nothing changed.
    assert ctl(config_service, capsys, "node", "drain", "n9", "--no-wait")[0] == 6
    code, _, err = ctl(config_service, capsys, "node", "drain", "n1", "--timeout=-5s")
    assert code == 2 and "--timeout" in err
    code, _, err = ctl(config_service, capsys, "node", "drain", "n1", "--timeout", "10d", "--no-wait")
    assert code == 4 and "out of range: 1s to 24h" in err
    code, _, err = ctl(config_service, capsys, "node", "drain", "n1", "--threshold", "-1")
    assert code == 2 and "--threshold -1" in err
    code, _, err = ctl(config_service, capsys, "node", "isolate", "n1", "--timeout", "5m")
    assert code == 2 and "go(es) with drain only" in err
    code, out, _ = ctl(config_service, capsys, "history", "-o", "json")
    assert json.loads(out)[0]["revision"] == "2"

    # Cluster drain (c2 has one node: --force), then cluster restore; node restore ends n1's drain.
    code, out, err = ctl(config_service, capsys, "cluster", "drain", "c2", "--force", "--no-wait", "--reason", "x")
    assert code == 0 and "node n3 draining since" in out, err
    code, out, err = ctl(config_service, capsys, "cluster", "restore", "c2")
    assert code == 0 and "cluster c2: restore: revision 4" in out, err
    code, out, err = ctl(config_service, capsys, "node", "restore", "n1")
    assert code == 0 and "~ nodes/n1" in out and 'state: "draining" -> "active"' in out, out
    code, out, _ = ctl(config_service, capsys, "list", "nodes", "-o", "json")
    assert [n["state"] for n in json.loads(out)] == ["active", "active", "active"]


async def test_drain_is_one_atomic_revision_for_a_cluster(client: ConfigClient) -> None:
    doc = two_clusters()
    await client.apply(yaml.safe_dump(doc).encode(), reason="seed")
    r = await client.set_node_state("", pb.NODE_STATE_DRAINING, cluster="c1", force=True, drain_timeout_s=30)
    assert r.committed and r.counts.modified == 2
    got = await nodes(client)
    assert got["n1"]["drain"]["started_at"] == got["n2"]["drain"]["started_at"]
    await asyncio.sleep(0)  # keeps the test a coroutine like its neighbours
