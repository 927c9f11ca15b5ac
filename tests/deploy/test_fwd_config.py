"""`vgw-fwd-config`, the node bootstrap: the console script as deployments run it, from a file and
from the config store on a real nats-server; bad input exits 2 and writes nothing; the output file
is replaced atomically."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.config.bad_documents import EXAMPLE, example
from tests.support.nats_server import NatsServer
from vgw.bus import Bus
from vgw.config.store import ConfigStore
from vgw.config.validate import load_document

SCRIPT = Path(sys.executable).parent / "vgw-fwd-config"
GOOD_ARGS = ["--node", "node-a", "--ext", "net_af_packet0", "--int", "net_af_packet1"]


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def test_console_script_and_module_render_the_same(tmp_path: Path, child_env: dict[str, str]) -> None:
    out = tmp_path / "fwd.conf"
    r = run(["--config", str(EXAMPLE), *GOOD_ARGS, "-o", str(out)], child_env)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stderr
    text = out.read_text()
    assert "ext net_af_packet0 192.0.2.11/24" in text.splitlines()
    assert "int net_af_packet1 198.51.100.11/24" in text.splitlines()
    assert "route 0.0.0.0/0 192.0.2.1 ext" in text.splitlines()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    module = subprocess.run(
        [sys.executable, "-m", "dataplane.shim.fwdargs", "--config", str(EXAMPLE), *GOOD_ARGS],
        capture_output=True, text=True, env=child_env, timeout=60, check=True,
    )  # fmt: skip
    assert module.stdout == text
    # the node id from the environment, as the units and the init container give it
    r = run(["--config", str(EXAMPLE), "--ext", "net_af_packet0", "--int", "net_af_packet1"],
            {**child_env, "VGW_NODE_ID": "node-a"})  # fmt: skip
    assert r.returncode == 0 and r.stdout == text


def test_per_node_devices_beat_the_flags_which_beat_the_document(tmp_path: Path, child_env: dict[str, str]) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"node-a": {"ext": "0000:3b:00.0"}, "node-b": {"int": "0000:af:00.1"}}))
    r = run(["--config", str(EXAMPLE), *GOOD_ARGS, "--devices", str(devices)], child_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "ext 0000:3b:00.0 192.0.2.11/24" in lines and "int net_af_packet1 198.51.100.11/24" in lines
    # no flags: the document's own `device` fields
    r = run(["--config", str(EXAMPLE), "--node", "node-b", "--devices", str(devices)], child_env)
    lines = r.stdout.splitlines()
    assert "ext veth-b-ext 192.0.2.12/24" in lines and "int 0000:af:00.1 198.51.100.12/24" in lines


def _no_device_doc(tmp_path: Path) -> Path:
    raw = example()
    for port in ("external", "internal"):
        raw["nodes"][0][port].pop("device", None)
    path = tmp_path / "nodev.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BAD_CASES = {
    "missing document": (["--config", "{tmp}/nope.yaml", *GOOD_ARGS], {}, "nope.yaml"),
    "invalid document": (["--config", "{tmp}/invalid.yaml", *GOOD_ARGS], {}, "problem(s) in the configuration"),
    "unknown node": (["--config", str(EXAMPLE), "--node", "node-z"], {}, "no node 'node-z'"),
    "no node at all": (["--config", str(EXAMPLE)], {}, "no node: pass --node ID or set VGW_NODE_ID"),
    "no device": (["--config", "{tmp}/nodev.yaml", "--node", "node-a"], {}, "no DPDK device for the ext port"),
    "bad devices file": (
        ["--config", str(EXAMPLE), *GOOD_ARGS, "--devices", "{tmp}/devices.yaml"], {}, "node-a.eth0: Extra inputs",
    ),
    "both sources": (["--config", str(EXAMPLE), "--from-nats", *GOOD_ARGS], {}, "not allowed with argument"),
    "no source": (GOOD_ARGS, {}, "one of the arguments --config --from-nats is required"),
    "negative wait": (["--from-nats", *GOOD_ARGS, "--wait", "-1"], {}, "--wait must be >= 0"),
    "bad NATS setting": (["--from-nats", *GOOD_ARGS], {"VGW_NATS_URL": "http://x:4222"}, "bad setting VGW_NATS_URL"),
    "missing identity file": (["--from-nats", *GOOD_ARGS, "--nats-env", "{tmp}/none.env"], {}, "no such file"),
    "unwritable output": (["--config", str(EXAMPLE), *GOOD_ARGS, "-o", "{tmp}/no/dir/fwd.conf"], {}, "cannot write"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES, ids=list(BAD_CASES))
def test_bad_input_exits_2_and_writes_nothing(case: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    args, env, message = BAD_CASES[case]
    (tmp_path / "invalid.yaml").write_text("nodes: [{id: node-a}]\n")
    _no_device_doc(tmp_path)
    (tmp_path / "devices.yaml").write_text("node-a: {eth0: x}\n")
    out = tmp_path / "fwd.conf"
    out.write_text("previous\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(out)]
    r = run(argv, {**child_env, **env})
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert r.stdout == ""
    assert out.read_text() == "previous\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_output_is_replaced_by_rename_never_rewritten_in_place(tmp_path: Path, child_env: dict[str, str]) -> None:
    out = tmp_path / "fwd.conf"
    out.write_text("old\n")
    before = out.stat().st_ino
    held = out.open()  # a reader that opened the old file keeps reading the old file, whole
    r = run(["--config", str(EXAMPLE), *GOOD_ARGS, "-o", str(out)], child_env)
    assert r.returncode == 0, r.stderr
    assert held.read() == "old\n"
    held.close()
    assert out.stat().st_ino != before and out.read_text().startswith("# vgw-fwd settings for node node-a")
    assert [p.name for p in tmp_path.iterdir()] == ["fwd.conf"]


async def test_from_nats_waits_with_progress_until_the_node_is_configured(
    nats_server: NatsServer, bus: Bus, tmp_path: Path, child_env: dict[str, str]
) -> None:
    """Started before anything is applied (as a node that boots first): it says what it waits for,
    and renders the node once a revision has it -- the same lines as from the file."""
    out = tmp_path / "fwd.conf"
    env = {**child_env, "VGW_NATS_URL": nats_server.url, "VGW_NODE_ID": "node-b"}
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "--from-nats", "--wait", "60", "--ext", "net_af_packet0", "--int", "net_af_packet1",
        "-o", str(out), env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert "waiting for the config store (KV bucket vgw_config" in line, line
        store = await ConfigStore(bus).open()
        only_a = example()
        only_a["nodes"] = [n for n in only_a["nodes"] if n["id"] == "node-a"]
        only_a["clusters"][0]["conn_sync"] = {"enabled": False}  # a sync peer needs a second node
        await store.commit(load_document(json.dumps(only_a)), actor="test", reason="node-a only")
        deadline = time.monotonic() + 30
        seen = ""
        while "has no such node" not in seen and time.monotonic() < deadline:
            seen += (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert "node 'node-b' in the configuration (revision 1 has no such node)" in seen
        assert not out.exists()
        await store.commit(load_document(EXAMPLE.read_bytes()), actor="test", reason="both nodes")
        rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.read_text()
    assert (
        text.splitlines()[0]
        == "# vgw-fwd settings for node node-b, rendered by vgw-fwd-config from config store revision 2"
    )
    from_file = run(["--config", str(EXAMPLE), "--node", "node-b", *GOOD_ARGS[2:]], child_env)
    assert text.splitlines()[1:] == from_file.stdout.splitlines()[1:]


def test_from_nats_gives_up_after_the_wait_with_exit_1(tmp_path: Path, child_env: dict[str, str]) -> None:
    server = NatsServer(tmp_path / "nats").start()  # up, but no config service ever created the store
    try:
        out = tmp_path / "fwd.conf"
        t0 = time.monotonic()
        r = run(["--from-nats", *GOOD_ARGS, "--wait", "2", "-o", str(out)], {**child_env, "VGW_NATS_URL": server.url})
        took = time.monotonic() - t0
    finally:
        server.stop(kill=True)
    assert r.returncode == 1, r.stderr
    assert "gave up after 2s waiting for the config store" in r.stderr
    assert not out.exists()
    assert took < 20
    # nobody listening at all: the reason names NATS
    r = run(["--from-nats", *GOOD_ARGS, "--wait", "0"], {**child_env, "VGW_NATS_URL": server.url})
    assert r.returncode == 1 and "waiting for NATS at nats://127.0.0.1:" in r.stderr, r.stderr


def test_nats_identity_from_an_env_file_and_the_environment_wins(tmp_path: Path, child_env: dict[str, str]) -> None:
    """--nats-env reads an identity's vgw.env (the systemd unit's ExecStartPre passes the node's shim
    identity); a variable in the environment overrides it, as systemd's own files would."""
    env_file = tmp_path / "vgw.env"
    env_file.write_text("VGW_NATS_URL=nats://127.0.0.1:1\n")
    r = run(["--from-nats", *GOOD_ARGS, "--wait", "0", "--nats-env", str(env_file)], child_env)
    assert r.returncode == 1 and "NATS at nats://127.0.0.1:1:" in r.stderr, r.stderr
    r = run(["--from-nats", *GOOD_ARGS, "--wait", "0", "--nats-env", str(env_file)],
            {**child_env, "VGW_NATS_URL": "nats://127.0.0.1:2"})  # fmt: skip
    assert r.returncode == 1 and "NATS at nats://127.0.0.1:2:" in r.stderr, r.stderr
