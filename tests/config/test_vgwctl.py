"""vgwctl against the real config service: the bad-document table, exit codes, dry-run, rollback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.config.bad_documents import BAD, EXAMPLE, Bad, example
from tests.config.conftest import REPO, ConfigService
from tests.config.test_api_auth import TOKENS, write_tokens
from tests.support.nats_server import NatsServer
from vgw.bus import Bus, Received
from vgw.cli.main import main as vgwctl_main
from vgw.events import ConfigChanged


def run_inproc(svc: ConfigService, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = vgwctl_main([*args, "--config-addr", svc.addr])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_document_through_vgwctl(
    bad: Bad, _shared_service: ConfigService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "bad.yaml"
    doc.write_text(bad.text())
    code, out, err = run_inproc(_shared_service, "apply", "-f", str(doc), "-o", "json", capsys=capsys)
    assert code == 4, (out, err)
    result = json.loads(out)
    assert result["error"] == "INVALID_ARGUMENT"
    assert any(v["path"] == bad.path and bad.reason in v["reason"] for v in result["violations"]), result
    assert bad.path in err  # the human message names the path too
    # offline, `validate` refuses it with exactly the service's violations
    assert vgwctl_main(["validate", "-f", str(doc), "-o", "json"]) == 4
    offline, _ = capsys.readouterr()
    assert json.loads(offline)["violations"] == result["violations"]
    code, out, _ = run_inproc(_shared_service, "history", "-o", "json", "--limit", "5", capsys=capsys)
    assert code == 0 and [h["revision"] for h in json.loads(out)] == ["1"]


def vgwctl(
    svc: ConfigService, env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", *args],
        input=stdin.decode() if stdin is not None else None,
        env={**env, "VGW_CONFIG_ADDR": svc.addr},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_vgwctl_process_apply_dry_run_rollback_and_exit_codes(
    config_service: ConfigService, config_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    events: list[ConfigChanged] = []

    async def on_event(r: Received) -> None:
        assert isinstance(r.event, ConfigChanged)
        events.append(r.event)

    await bus.subscribe(on_event, types=[ConfigChanged])

    def ctl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return vgwctl(config_service, config_env, *args, stdin=stdin)

    async def actl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(ctl, *args, stdin=stdin)

    r = await actl("apply", "-f", str(EXAMPLE), "--reason", "initial")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("applied: revision 1 (was 0)")

    # Dry run: shows the diff, changes nothing.
    doc = example()
    doc["vips"][1]["services"][0]["backends"][1]["weight"] = 60
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    r = await actl("apply", "--dry-run", "-f", str(changed))
    assert r.returncode == 0, r.stderr
    assert "dry run: would change +0 -0 ~1 against revision 1" in r.stdout
    assert "~ services/api-tcp/backends/198.51.100.22:8443" in r.stdout and "weight: 50 -> 60" in r.stdout
    r = await actl("history", "-o", "json")
    assert [h["revision"] for h in json.loads(r.stdout)] == ["1"]

    # Apply for real, from stdin, then conflict and the other exit codes.
    r = await actl("apply", "-f", "-", "--expect-revision", "1", stdin=changed.read_bytes())
    assert r.returncode == 0 and "revision 2" in r.stdout, r.stderr
    r = await actl("apply", "-f", str(EXAMPLE), "--expect-revision", "1")
    assert r.returncode == 5 and "current revision is 2" in r.stderr
    r = await actl("backend", "drain", "198.51.100.99:80")
    assert r.returncode == 6
    r = await actl("list", "vips", "--config-addr", "127.0.0.1:1")
    assert r.returncode == 3 and "cannot reach the config service" in r.stderr
    r = await actl("apply", "-f", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2

    # Drain, isolate, then roll back to revision 1.
    r = await actl("backend", "drain", "198.51.100.21:8080", "--service", "www-http", "-o", "yaml")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["revision"] == "3"
    r = await actl("node", "isolate", "node-b", "--reason", "maintenance")
    assert r.returncode == 0 and "revision 4" in r.stdout
    r = await actl("list", "nodes", "-o", "json")
    assert [n["state"] for n in json.loads(r.stdout)] == ["active", "isolated"]
    r = await actl("rollback", "1", "--reason", "back to the start")
    assert r.returncode == 0 and "revision 5" in r.stdout, r.stderr
    r = await actl("get", "config", "-o", "json")
    got = json.loads(r.stdout)
    assert got["vips"][1]["services"][0]["backends"][1]["weight"] == 50
    r = await actl("status")
    assert "revision        5 (rollback" in r.stdout

    async with asyncio.timeout(10):
        while len(events) < 5:
            await asyncio.sleep(0.05)
    assert [(e.revision, e.action.value) for e in events] == [
        (1, "apply"),
        (2, "apply"),
        (3, "backend_state"),
        (4, "node_state"),
        (5, "rollback"),
    ]
    assert events[-1].rolled_back_to == 1 and events[-1].reason == "back to the start"


def test_diff_exits_1_on_differences_0_without(
    _shared_service: ConfigService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As diff(1) and `kubectl diff`: the status answers the question, errors are above 1."""
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(example()))
    doc = example()
    doc["vips"][1]["services"][0]["backends"][1]["weight"] = 60
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))

    code, out, _ = run_inproc(_shared_service, "diff", "-f", str(same), capsys=capsys)
    assert code == 0 and "(no differences)" in out
    code, out, _ = run_inproc(_shared_service, "diff", "-f", str(changed), capsys=capsys)
    assert code == 1 and "~ services/api-tcp/backends/198.51.100.22:8443" in out
    code, out, _ = run_inproc(_shared_service, "diff", "-f", str(changed), "-o", "json", capsys=capsys)
    assert code == 1 and json.loads(out)["counts"]["modified"] == 1
    code, out, _ = run_inproc(_shared_service, "diff", "1", "1", capsys=capsys)
    assert code == 0
    # a dry run still exits 0 with differences: it is an apply that worked
    code, out, _ = run_inproc(_shared_service, "apply", "--dry-run", "-f", str(changed), capsys=capsys)
    assert code == 0 and "dry run: would change +0 -0 ~1" in out

    code, _, err = run_inproc(_shared_service, "diff", "-f", str(tmp_path / "missing.yaml"), capsys=capsys)
    assert code == 2 and "cannot read" in err
    code, _, err = run_inproc(_shared_service, "diff", "-f", str(same), "1", capsys=capsys)
    assert code == 2 and "either -f FILE or revisions" in err
    code, _, _ = run_inproc(_shared_service, "diff", "1", "99", capsys=capsys)
    assert code == 6
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD[0].text())
    code, _, _ = run_inproc(_shared_service, "diff", "-f", str(bad), capsys=capsys)
    assert code == 4
    assert vgwctl_main(["diff", "-f", str(same), "--config-addr", "127.0.0.1:1", "--timeout", "2"]) == 3
    capsys.readouterr()


def test_connection_options_before_or_after_the_command(
    _shared_service: ConfigService, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = _shared_service.addr
    for argv in (
        ["--config-addr", addr, "-o", "json", "list", "vips"],
        ["list", "--config-addr", addr, "vips", "-o", "json"],
        ["-o", "json", "list", "vips", "--config-addr", addr],
        # a dead address first: the later one wins
        ["--config-addr", "127.0.0.1:1", "list", "vips", "-o", "json", "--config-addr", addr],
    ):
        assert vgwctl_main(argv) == 0, argv
        out, err = capsys.readouterr()
        assert [v["address"] for v in json.loads(out)] == ["203.0.113.10", "203.0.113.20"], (argv, err)


def test_diff_failures_other_commands_call_1_are_7(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A token service: without a token every command fails with 1 (not authenticated) -- except
    diff, whose 1 means "differences"; with the token, before or after the command, it answers."""
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, TOKENS)
    svc = ConfigService(nats_server, tmp_path / "tok", config_env, config_tokens_file=str(tokens)).start()
    try:
        doc = tmp_path / "doc.yaml"
        doc.write_text(yaml.safe_dump(example()))
        code, _, err = run_inproc(svc, "history", capsys=capsys)
        assert code == 1 and "not authenticated" in err
        code, _, err = run_inproc(svc, "diff", "-f", str(doc), capsys=capsys)
        assert code == 7 and "not authenticated" in err
        token = TOKENS["viewer"][1]
        code, out, err = run_inproc(svc, "--token", token, "diff", "-f", str(doc), capsys=capsys)
        assert code == 1 and "document vs revision 0: +" in out, err  # nothing applied yet: all new
        code, _, err = run_inproc(svc, "diff", "-f", str(doc), "--token", token, capsys=capsys)
        assert code == 1, err
    finally:
        svc.stop(kill=True)
