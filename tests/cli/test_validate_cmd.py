"""`vgwctl validate -f FILE`: offline, the config service's validator and error format, exit 0/4/2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.vgwctl import REPO, run
from tests.config.bad_documents import BAD, Bad, example
from vgw.cli.main import main as vgwctl_main

EXAMPLE = REPO / "docs" / "config-example.yaml"


def offline(env: dict[str, str]) -> dict[str, str]:
    """Nothing to talk to: a NATS and a config service address where nothing listens."""
    return {**env, "VGW_NATS_URL": "nats://127.0.0.1:1", "VGW_CONFIG_ADDR": "127.0.0.1:1"}


def test_the_example_is_valid_from_a_file_and_from_stdin(child_env: dict[str, str]) -> None:
    env = offline(child_env)
    r = run("validate", "-f", str(EXAMPLE), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{EXAMPLE}: valid (2 VIPs, 4 services, 2 nodes, 0 warning(s))\n" and r.stderr == ""
    r = run("validate", "-f", "-", "-o", "json", env=env, stdin=EXAMPLE.read_text())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"valid": True, "violations": [], "warnings": []}


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_every_bad_document_is_refused_with_path_and_reason(
    bad: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (one process per document would take minutes); the process is run above and below."""
    doc = tmp_path / f"{bad.id}.yaml"
    doc.write_text(bad.text())
    assert vgwctl_main(["validate", "-f", str(doc)]) == 4
    out, err = capsys.readouterr()
    assert err.startswith(f"vgwctl: {doc}: invalid configuration (")
    assert any(line.startswith(f"  {bad.path}: ") and bad.reason in line for line in err.splitlines()), err
    assert out == ""


def test_json_output_lists_the_violations(child_env: dict[str, str]) -> None:
    doc = example()
    doc["vips"][0]["services"][0]["port"] = 0
    doc["nodes"][0]["surprise"] = 1
    r = run("validate", "-f", "-", "-o", "json", env=offline(child_env), stdin=yaml.safe_dump(doc))
    assert r.returncode == 4
    out = json.loads(r.stdout)
    assert out["valid"] is False
    paths = {v["path"]: v["reason"] for v in out["violations"]}
    assert paths["nodes[0].surprise"] == "unknown field"
    assert paths["vips[0].services[0].port"].startswith("Input should be greater than or equal to 1")


def test_a_bad_password_is_not_echoed(child_env: dict[str, str]) -> None:
    doc = example()
    secret = "s3cret-" + "x" * 80  # too long: refused, and the message must not carry it
    doc["nodes"][0]["bgp"]["peers"][0]["password"] = secret
    r = run("validate", "-f", "-", env=offline(child_env), stdin=yaml.safe_dump(doc))
    assert r.returncode == 4 and "nodes[0].bgp.peers[0].password: " in r.stderr
    assert "s3cret" not in r.stderr + r.stdout


def test_warnings_go_to_stderr_and_do_not_fail(child_env: dict[str, str]) -> None:
    doc = example()
    doc["vips"][0]["services"][0]["expected_connections"] = 50_000_000
    r = run("validate", "-f", "-", env=offline(child_env), stdin=yaml.safe_dump(doc))
    assert r.returncode == 0, r.stderr
    assert "vgwctl: warning: vips[0].services[0].expected_connections: service " in r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("vgwctl: warning: ")]
    assert r.stdout.endswith(f", {len(warned)} warning(s))\n") and r.stderr.count("vgwctl:") == len(warned)


def test_unreadable_input_exits_2(child_env: dict[str, str], tmp_path: Path) -> None:
    env = offline(child_env)
    for path in (tmp_path / "missing.yaml", tmp_path):
        r = run("validate", "-f", str(path), env=env)
        assert r.returncode == 2 and r.stderr.startswith(f"vgwctl: cannot read {path}: "), r.stderr
        assert r.stdout == ""
    r = run("validate", env=env)
    assert r.returncode == 2 and "the following arguments are required: -f/--file" in r.stderr
