"""vgw-fwd's settings file rendered from a node of the config document (dataplane.shim.fwdargs):
ports, routes and the node's forwarder section (workers, connection capacity, memory budget)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataplane.shim.fwdargs import main, render_settings
from tests.config.bad_documents import EXAMPLE, example
from vgw.config.validate import load_document


def test_example_node_with_default_forwarder_settings() -> None:
    doc = load_document(EXAMPLE.read_bytes())
    node = doc.node("node-a")
    assert node is not None
    assert render_settings(node, socket="/run/vgw-fwd.sock") == (
        "# vgw-fwd settings for node node-a, rendered by vgw-fwd-config from the config document\n"
        "mode dual-arm\n"
        "ext veth-a-ext 192.0.2.11/24\n"
        "int veth-a-int 198.51.100.11/24\n"
        "mtu 1500\n"
        "workers 1\n"
        "conn-capacity 262144\n"
        "memory-budget 536870912\n"
        "route 0.0.0.0/0 192.0.2.1 ext\n"
        "socket /run/vgw-fwd.sock\n"
        "# lips 198.51.100.101 198.51.100.102 (programmed by the shim, not read from this file)\n"
    )


def test_forwarder_section_rendered_as_plain_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = example()
    raw["nodes"][1]["forwarder"] = {"workers": 4, "conn_capacity": 1048576, "memory_budget": "2Gi"}
    cfg = tmp_path / "vgw.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(cfg), "--node", "node-b", "--ext", "net_af_packet0", "--int", "net_af_packet1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1:5] == [
        "mode dual-arm",
        "ext net_af_packet0 192.0.2.12/24",
        "int net_af_packet1 198.51.100.12/24",
        "mtu 1500",
    ]
    assert lines[5:8] == ["workers 4", "conn-capacity 1048576", "memory-budget 2147483648"]


def test_a_document_over_budget_renders_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = example()
    raw["nodes"][0]["forwarder"] = {"memory_budget": "64Mi"}
    cfg = tmp_path / "vgw.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(cfg), "--node", "node-a"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "nodes[0].forwarder.memory_budget: node node-a needs 101.4 MiB" in err


def test_sync_cluster_renders_its_other_nodes_as_peers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the example's cluster syncs (clusters[0].conn_sync): each node gets the other as its peer
    assert main(["--config", str(EXAMPLE), "--node", "node-a", "--sync-key-file", "/run/k"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == ["sync-port 8473", "sync-key-file /run/k", "sync-peer 198.51.100.12"]
    assert main(["--config", str(EXAMPLE), "--node", "node-b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == ["sync-port 8473", "sync-key-file /etc/vgw/conn-sync.key", "sync-peer 198.51.100.11"]
    # a cluster that does not sync renders no sync lines at all
    raw = example()
    raw["clusters"][0]["conn_sync"] = {"enabled": False}
    cfg = tmp_path / "vgw.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(cfg), "--node", "node-a"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("sync-")]
