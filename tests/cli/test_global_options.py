"""Options vgwctl takes before or after the subcommand (vgw/cli/globalopts.py): every position gives
the same value, a default never overwrites a given value, and misuse still exits 2 with a message."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from pathlib import Path

import pytest

from tests.cli.vgwctl import parse, run
from tests.integration.test_bus import backend_down
from tests.support.nats_server import NatsServer
from vgw.bus import Bus

NATS = "nats://192.0.2.7:4222"
ADDR = "192.0.2.8:50051"


def positions(command: list[str], option: list[str]) -> list[list[str]]:
    """``option`` before the command, after it, and between each pair of its words (a word with a
    space is one option with its value: nothing goes between those)."""
    words = [w.split() for w in command]
    flat = [list(itertools.chain.from_iterable(words[:i])) for i in range(len(words) + 1)]
    rest = [list(itertools.chain.from_iterable(words[i:])) for i in range(len(words) + 1)]
    return [head + option + tail for head, tail in zip(flat, rest, strict=True)]


CASES = [
    # (command words, option words, attribute, expected value)
    (["status"], ["--nats", NATS], "nats", NATS),
    (["status"], ["--config-addr", ADDR], "config_addr", ADDR),
    (["status"], ["-o", "json"], "output", "json"),
    (["list", "vips"], ["--output", "yaml"], "output", "yaml"),
    (["list", "vips"], ["--tls-server-name", "config.example"], "tls_server_name", "config.example"),
    (["history"], ["--token-file", "/etc/vgw/token"], "token_file", Path("/etc/vgw/token")),
    (["history"], ["--tls"], "tls", True),
    (["node", "drain", "node-a"], ["--token", "t0k"], "token", "t0k"),
    (["node", "drain", "node-a"], ["--client-cert", "c.pem"], "client_cert", Path("c.pem")),
    (["diff", "-f x.yaml"], ["--tls-ca", "ca.pem"], "tls_ca", Path("ca.pem")),
    (["events", "tail"], ["--nats", NATS], "nats", NATS),
    (["forwarder"], ["-o", "json"], "output", "json"),
    (["validate", "-f x.yaml"], ["-o", "json"], "output", "json"),
    (["lab", "up"], ["--id", "x"], "id", "x"),
    (["lab", "status"], ["--id", "x"], "id", "x"),
    (["lab", "status"], ["-o", "json"], "output", "json"),
    (["lab", "scenario", "backend-failure"], ["--id", "ab1"], "id", "ab1"),
    (["security", "init", "/tmp/d"], ["--nats", NATS], "nats", NATS),
]


@pytest.mark.parametrize(("command", "option", "attr", "want"), CASES, ids=[f"{c[0][0]}:{c[1][0]}" for c in CASES])
def test_every_position_gives_the_value(command: list[str], option: list[str], attr: str, want: object) -> None:
    for argv in positions(command, option):
        assert getattr(parse(*argv), attr) == want, argv


def test_defaults_are_filled_when_no_position_gives_the_option() -> None:
    args = parse("status")
    assert (args.nats, args.config_addr, args.token, args.tls, args.output) == (None, None, None, False, "table")
    assert parse("lab", "up").id == "lab"
    assert parse("lab", "status").output == "table"
    assert not hasattr(parse("events", "tail"), "output")  # a command without -o gets none


def test_a_default_never_overwrites_a_value_given_elsewhere() -> None:
    # before this, the subcommand's own defaults (output table, lab id "lab") replaced these
    assert parse("-o", "json", "list", "vips").output == "json"
    assert parse("--config-addr", ADDR, "-o", "yaml", "history", "--limit", "3").config_addr == ADDR
    assert parse("lab", "--id", "x", "status", "--watch").id == "x"
    assert parse("--tls", "list", "nodes", "--tls-ca", "ca.pem").tls is True


def test_given_twice_the_later_wins() -> None:
    assert parse("-o", "json", "list", "vips", "-o", "yaml").output == "yaml"
    assert parse("--nats", "nats://192.0.2.1:1", "status", "--nats", NATS).nats == NATS
    assert parse("lab", "--id", "a", "up", "--id", "b").id == "b"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "json", "events", "tail"], "-o/--output does not apply to 'vgwctl events tail'"),
        (["--config-addr", ADDR, "forwarder"], "--config-addr does not apply to 'vgwctl forwarder'"),
        (["--token", "t", "validate", "-f", "x"], "--token does not apply to 'vgwctl validate'"),
        (["--id", "x", "status"], "--id does not apply to 'vgwctl status'"),
        (["-o", "yaml", "lab", "status"], "argument -o/--output: invalid choice: 'yaml' (choose from 'table', 'json')"),
        (["lab", "-o", "yaml", "scenario", "all"], "invalid choice: 'yaml'"),
        (["-o", "xml", "status"], "argument -o/--output: invalid choice: 'xml'"),
        (["status", "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
        (["lab", "up", "--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus", "status"], "unrecognized arguments: --bogus"),
        (["events", "tail", "--config-addr", ADDR], "unrecognized arguments: --config-addr"),
        (["status", "--nats"], "argument --nats: expected one argument"),
        (["diff", "--tl", "x"], "ambiguous option: --tl could match"),
    ],
)
def test_misuse_exits_2_with_a_clear_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_misuse_through_the_process_exits_2_and_does_nothing(child_env: dict[str, str], tmp_path: Path) -> None:
    r = run("-o", "json", "events", "tail", "--count", "1", env=child_env, timeout=20)
    assert r.returncode == 2 and "does not apply to 'vgwctl events tail'" in r.stderr and r.stdout == ""
    lab_id = "z" + secrets.token_hex(2)[:3]
    r = run("lab", "up", "--id", "TOOLONG", env=child_env, timeout=20)  # the lab's own check of --id
    assert r.returncode == 2 and "lab id 'TOOLONG'" in r.stderr, r.stderr
    assert not Path("/tmp/vgw-lab-TOOLONG").exists()
    for argv in (
        ["lab", "status", "--id", lab_id],
        ["lab", "--id", lab_id, "status"],
        ["--id", lab_id, "lab", "status"],
    ):
        r = run(*argv, env=child_env, timeout=20)
        assert r.returncode == 1 and f"lab {lab_id!r} is not up" in r.stderr, (argv, r.stderr)


async def test_nats_in_any_position_reaches_the_bus(
    bus: Bus, nats_server: NatsServer, child_env: dict[str, str]
) -> None:
    """`events tail --since` replays a stored event from the NATS --nats names, wherever it is."""
    await bus.publish(backend_down(1))
    dead = "nats://127.0.0.1:1"
    env = {**child_env, "VGW_NATS_URL": dead, "VGW_NATS_CONNECT_TIMEOUT_S": "2"}
    tail = ["tail", "--since", "10m", "--count", "1", "--timeout", "20s"]
    for argv in (
        ["--nats", nats_server.url, "events", *tail],
        ["events", "--nats", nats_server.url, *tail],
        ["events", *tail, "--nats", nats_server.url],
        ["--nats", dead, "events", *tail, "--nats", nats_server.url],  # the later one wins
    ):
        r = await asyncio.to_thread(run, *argv, env=env, timeout=40)
        assert r.returncode == 0, (argv, r.stderr)
        assert '"type":"io.vgw.backend.down.v1"' in r.stdout, (argv, r.stdout)
    r = await asyncio.to_thread(run, "events", *tail, "--nats", dead, env=env, timeout=40)
    assert r.returncode == 3, r.stderr
