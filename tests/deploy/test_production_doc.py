"""docs/production.md: every command of its shell blocks is one that something runs.

Each command is matched to one rule below, which binds it to a tested source: the test runs it
(read-only tools, the router configuration checks, ``vgwctl security init`` and the settings renderer
into a temporary directory, whose output the real vgw-fwd must accept), parses it with vgwctl's own
argument parser, checks its options against the tool's ``--help`` (tools that need hardware), or
finds its form in the lab's code, the tests or the shipped units. A command no rule knows fails.
Every other block names its check in an HTML comment before it: a file it must equal, the config
document (validated, and the guide's capacity figures recomputed from it), or "not run here" for
vendor router syntax and boot parameters.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.common import REPO, SYSTEMD, console_scripts
from tests.deploy.doc_commands import Block, Command, blocks, commands

DOC = REPO / "docs" / "production.md"
FWD = REPO / "dataplane" / "build" / "vgw-fwd"
NOT_RUN_KINDS = ("vendor syntax", "boot configuration")
# Host paths of the guide, and where the test puts them instead; a command the test runs may write
# nowhere else.
HOST_PATHS = ("/etc/vgw/config.yaml", "/etc/vgw/security", "/etc/vgw/conn-sync.key", "/etc/vgw/fwd.conf",
              "/var/lib/vgw-nats")  # fmt: skip


def page_blocks() -> list[Block]:
    return blocks(DOC.read_text())


def shell_commands() -> list[Command]:
    return [c for b in page_blocks() if b.lang == "sh" for c in commands(b)]


def marked(prefix: str) -> list[Block]:
    return [b for b in page_blocks() if b.marker and b.marker.startswith(prefix)]


def config_block() -> Block:
    (block,) = marked("check: config document")
    return block


def no_vgw_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


# -- the walk-through's host, in a temporary directory ------------------------------------------------


def run_vgwctl(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """vgwctl's main() in this process (its start-up costs seconds as a process on a busy machine)."""
    from vgw.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["vgwctl", *argv], code, out.getvalue(), err.getvalue())


@dataclass
class Host:
    root: Path
    security_init: subprocess.CompletedProcess[str] | None = None

    def path(self, word: str) -> str:
        for host in HOST_PATHS:
            if word == host or word.startswith(host + "/"):
                return str(self.root / host.lstrip("/")) + word[len(host) :]
        return word

    def argv(self, cmd: Command) -> list[str]:
        out = [self.path(w) for w in cmd.argv]
        for word in out[1:]:
            assert not word.startswith(("/etc/", "/var/", "/run/")), f"{cmd.text}: {word} is not redirected"
        return out

    def target(self, cmd: Command, op: str) -> Path:
        (target,) = [self.path(t) for o, t in cmd.redirects if o == op]
        assert target.startswith(str(self.root)), f"{cmd.text}: writes {target}"
        return Path(target)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("production-doc")
    h = Host(root)
    (root / "etc" / "vgw").mkdir(parents=True)
    Path(h.path("/etc/vgw/config.yaml")).write_text(config_block().text)
    (init,) = [c for c in shell_commands() if c.argv[:3] == ("vgwctl", "security", "init")]
    h.security_init = run_vgwctl(h.argv(init)[1:])
    yield h
    shutil.rmtree(root, ignore_errors=True)


# -- the checks -----------------------------------------------------------------------------------------

Check = Callable[[Command, Host], None]


def vgwctl_parses(cmd: Command, host: Host) -> None:
    """vgwctl's own parser accepts the line, as vgwctl's main() parses it (global options resolved
    too), without running the command: a renamed command or option fails here."""
    from vgw.cli import globalopts
    from vgw.cli.main import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser = build_parser()
            globalopts.resolve(parser, parser.parse_args(list(cmd.argv[1:])))
        except SystemExit as exc:
            raise AssertionError(f"vgwctl rejects `{cmd.text}`: {err.getvalue().strip()}") from exc
    if cmd.argv[1] == "forwarder":  # on a node of the walk-through: the socket the unit gives vgw-fwd
        unit = (SYSTEMD / "vgw-fwd.service").read_text()
        socket = cmd.argv[cmd.argv.index("--socket") + 1] if "--socket" in cmd.argv else "/run/vgw-fwd.sock"
        assert f"--socket {socket} " in unit, f"vgw-fwd.service does not listen on {socket}: {cmd.text}"


def security_init_runs(cmd: Command, host: Host) -> None:
    r = host.security_init
    assert r is not None and r.returncode == 0, r and r.stderr
    doc_nodes = re.findall(r"^  - id: (\S+)$", config_block().text, re.M)
    assert doc_nodes, "the config document names no node"
    ids = host.root / "etc/vgw/security/identities"
    for node in doc_nodes:
        for role in ("shim", "routectl"):
            assert (ids / f"{role}-{node}" / "vgw.env").is_file(), f"no {role}-{node} identity"
    url = next(w for w in cmd.argv if w.startswith("tls://"))
    assert f"VGW_NATS_URL={url}" in (ids / "admin" / "vgw.env").read_text()


def validate_runs(cmd: Command, host: Host) -> None:
    """``vgwctl validate`` connects to nothing: run it on the walk-through's document."""
    vgwctl_parses(cmd, host)
    r = run_vgwctl(host.argv(cmd)[1:])
    assert r.returncode == 0, f"`{cmd.text}` exit {r.returncode}: {r.stdout}{r.stderr}"
    # no warning either: the LIPs hold the service's expected_connections (capacity planning)
    assert "warning" not in r.stderr, r.stderr


def fwd_config_renders(cmd: Command, host: Host) -> None:
    """The renderer as the guide calls it, against the guide's config document; the real vgw-fwd
    must then accept every line of the settings file it wrote."""
    script = Path(cmd.program).name
    if script == "python":
        assert cmd.argv[1:3] == ("-m", "dataplane.shim.fwdargs"), cmd.text
        entry, args = "dataplane.shim.fwdargs:main", host.argv(cmd)[3:]
    else:
        entry, args = console_scripts()[script], host.argv(cmd)[1:]
    module, func = entry.split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = {script!r}; sys.exit({func}())"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=no_vgw_env(),
                       timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    if "-o" in args or "--output" in args:
        out = Path(args[args.index("-o" if "-o" in args else "--output") + 1])
        assert str(out).startswith(str(host.root)), cmd.text
    else:
        out = host.target(cmd, ">") if cmd.redirects else host.root / "fwd.conf"
        out.write_text(r.stdout)
    settings = out.read_text()
    assert "ext 0000:3b:00.0 192.0.2.11/24" in settings.splitlines(), settings
    if os.geteuid() != 0 or not FWD.exists():
        pytest.skip("checking the settings with vgw-fwd needs root and dataplane/build/vgw-fwd (make setup)")
    from tests.forwarder.topology import cleanup_dpdk_files

    prefix = f"vgwprod{secrets.token_hex(4)}"
    try:
        fwd = subprocess.run(
            [str(FWD), "--no-huge", "-m", "64", "--no-pci", "--file-prefix", prefix, "--log-level", "*:error",
             "--", "--config", str(out), "--help"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        cleanup_dpdk_files(prefix)
    assert fwd.returncode == 0 and "usage: vgw-fwd" in fwd.stdout, fwd.stderr


def runs_here(cmd: Command, host: Host) -> None:
    """Read-only, or a check of a file in this repository: run it as written."""
    if not shutil.which(cmd.program):
        pytest.skip(f"{cmd.program} is not installed here (scripts/apt-packages.txt installs it)")
    r = subprocess.run(list(cmd.argv), capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert r.returncode == 0, f"`{cmd.text}` exit {r.returncode}: {r.stderr.strip()[-2000:]}"


def options_in_help(cmd: Command, host: Host) -> None:
    """Needs hardware (a NIC to bind, hugepages to change): its options must be the tool's own."""
    if not shutil.which(cmd.program):
        pytest.skip(f"{cmd.program} is not installed here (scripts/apt-packages.txt installs it)")
    r = subprocess.run([cmd.program, "--help"], capture_output=True, text=True, timeout=30, check=False)
    text = r.stdout + r.stderr
    for opt in cmd.options():
        assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{cmd.program} has no {opt}: {cmd.text}"


def dpdk_driver(cmd: Command, host: Host) -> None:
    """The module loaded is one dpdk-devbind.py binds DPDK ports to (a VM without modules cannot load it)."""
    devbind = shutil.which("dpdk-devbind.py")
    if not devbind:
        pytest.skip("dpdk-devbind.py is not installed here (Debian package dpdk)")
    drivers = re.search(r"^dpdk_drivers = \[(.*)\]$", Path(devbind).read_text(), re.M)
    assert drivers and f'"{cmd.argv[-1]}"' in drivers.group(1), cmd.text
    bind = [c for c in shell_commands() if c.program == "dpdk-devbind.py" and any("--bind" in w for w in c.argv)]
    assert bind and all(f"--bind={cmd.argv[-1]}" in c.argv for c in bind), "the guide binds to another driver"


def in_source(path: str, *patterns: str) -> Check:
    """The lab or a test runs this form: each pattern (formatted with the command's words) is in path."""

    def check(cmd: Command, host: Host) -> None:
        text = (REPO / path).read_text()
        for pattern in patterns:
            p = pattern.format(*cmd.argv)
            assert re.search(p, text), f"{path} has no {p!r} (`{cmd.text}`)"

    return check


def sysctl_as_the_lab(cmd: Command, host: Host) -> None:
    key, _, value = cmd.argv[2].partition("=")
    text = (REPO / "deploy/lab/net.py").read_text()
    assert f'"{key}": "{value}"' in text, f"the lab's router does not set {key}={value}"


def units_exist(cmd: Command, host: Host) -> None:
    nodes = set(re.findall(r"^  - id: (\S+)$", config_block().text, re.M))
    for unit in cmd.argv[3:]:
        template, at, instance = unit.partition("@")
        assert (SYSTEMD / f"{template}{at}.service").is_file(), f"no shipped unit {unit}"
        if at:
            assert instance in nodes, f"{unit}: {instance} is not a node of the config document"


def sources_an_identity(cmd: Command, host: Host) -> None:
    (path,) = cmd.argv[1:]
    assert re.fullmatch(r"/etc/vgw/security/identities/[\w-]+/vgw\.env", path), cmd.text
    assert Path(host.path(path)).is_file(), f"vgwctl security init wrote no {path}"


def exports_a_setting(cmd: Command, host: Host) -> None:
    for word in cmd.argv[1:]:
        name, _, value = word.partition("=")
        assert name in (REPO / "docs/settings.md").read_text() + (REPO / "docs/vgwctl.md").read_text(), name
        if name == "VGW_CONFIG_ADDR":  # the API's certificate must carry the address vgwctl dials
            init = next(c for c in shell_commands() if c.argv[:3] == ("vgwctl", "security", "init"))
            host_part = value.rsplit(":", 1)[0]
            assert ("--config-api-host", host_part) in zip(init.argv, init.argv[1:], strict=False), value


def shell_builtin(cmd: Command, host: Host) -> None:
    assert cmd.argv in (("set", "-a"), ("set", "+a")), cmd.text


def makes_a_key(cmd: Command, host: Host) -> None:
    out = host.target(cmd, ">")
    r = subprocess.run(host.argv(cmd), capture_output=True, text=True, timeout=30, check=True)
    out.write_text(r.stdout)
    # the forwarder's key rules (docs/forwarder.md): at least 32 hex digits
    assert re.fullmatch(r"[0-9a-f]{32}\n", out.read_text()), r.stdout


def restricts_a_key(cmd: Command, host: Host) -> None:
    argv = host.argv(cmd)
    Path(argv[-1]).touch()
    subprocess.run(argv, check=True, timeout=30)
    assert stat.S_IMODE(Path(argv[-1]).stat().st_mode) == 0o600


def telemetry_of_the_unit(cmd: Command, host: Host) -> None:
    """dpdk-telemetry.py finds the forwarder by its EAL --file-prefix: the one the guide gives it."""
    options_in_help(cmd, host)
    (env,) = marked("check: env file for deploy/systemd/vgw-fwd.service")
    prefix = re.search(r"--file-prefix (\S+)", env.text)
    assert prefix and cmd.argv[cmd.argv.index("-f") + 1] == prefix.group(1), cmd.text


def telemetry_command(cmd: Command, host: Host) -> None:
    assert cmd.piped_into == "dpdk-telemetry.py", cmd.text
    name = cmd.argv[1].split(",", 1)[0]
    assert f'"{name}"' in (REPO / "dataplane/dpdk/telemetry.c").read_text(), f"vgw-fwd registers no {name}"


@dataclass(frozen=True)
class Rule:
    pattern: str  # fullmatch over the command's words joined by single spaces
    check: Check
    why: str


# Where in_source looks for the forms of a command that the BGP tests and the lab run.
BGP_TESTS = "tests/routectl/lab.py"
LAB = "deploy/lab/lab.py"
# One rule a line: the first whose pattern matches a command checks it.
RULES = [
    Rule(r"vgwctl security init .*", security_init_runs, "run into a temporary directory"),
    Rule(r"vgwctl validate -f \S+", validate_runs, "offline: run against the guide's document"),
    Rule(r"vgwctl .*", vgwctl_parses, "vgwctl's argument parser"),
    Rule(r"(\S*/)?python -m dataplane\.shim\.fwdargs .*", fwd_config_renders, "run; vgw-fwd reads its output"),
    Rule(r"(\S*/)?vgw-fwd-config .*", fwd_config_renders, "run; vgw-fwd reads its output"),
    Rule(r"lscpu|dpdk-devbind\.py --status(-dev net)?|dpdk-hugepages\.py --show", runs_here, "read-only: run"),
    Rule(r"bird -p -c docs/examples/bird\.conf", runs_here, "BIRD's own parser"),
    Rule(r"vtysh --dryrun -f docs/examples/frr\.conf", runs_here, "FRR's own parser"),
    Rule(r"dpdk-devbind\.py --bind=vfio-pci( \S+)+", options_in_help, "needs a NIC: options from --help"),
    Rule(r"dpdk-hugepages\.py --pagesize \S+ --setup \S+", options_in_help, "changes the host: options from --help"),
    Rule(r"dpdk-telemetry\.py -f \S+", telemetry_of_the_unit, "needs a forwarder: options from --help"),
    Rule(r"modprobe vfio-pci", dpdk_driver, "needs kernel modules: the driver dpdk-devbind.py binds to"),
    Rule(r"echo /vgw/\w+", telemetry_command, "a telemetry command vgw-fwd registers"),
    Rule(r"birdc show protocols", in_source(BGP_TESTS, r'birdc\("show", "protocols"\)'), "tests"),
    Rule(r"birdc show route \S+ all", in_source(BGP_TESTS, r'birdc\("show", "route", prefix, "all"\)'), "tests"),
    Rule(r"ip route show 203\.0\.113\.10", in_source(LAB, r'"ip", "-j", "route", "show", f"\{{VIP\}}/32"'), "the lab"),
    Rule(r"sysctl -w net\.ipv4\.[\w.]+=\d+", sysctl_as_the_lab, "the lab's router"),
    Rule(r"systemctl enable --now( \S+)+", units_exist, "shipped units"),
    Rule(r"set [-+]a", shell_builtin, "shell"),
    Rule(r"\. \S+", sources_an_identity, "an identity of vgwctl security init"),
    Rule(r"export( \w+=\S+)+", exports_a_setting, "a documented setting"),
    Rule(r"openssl rand -hex 16", makes_a_key, "run into a temporary directory"),
    Rule(r"chmod 600 \S+", restricts_a_key, "run in a temporary directory"),
]


def rule_for(cmd: Command) -> Rule:
    line = " ".join(cmd.argv)
    for rule in RULES:
        if re.fullmatch(rule.pattern, line):
            return rule
    raise AssertionError(f"line {cmd.line}: no rule binds `{cmd.text}` to something that runs it")


# -- the tests ----------------------------------------------------------------------------------------


def test_the_guide_has_commands_and_the_readme_links_it() -> None:
    cmds = shell_commands()
    assert len(cmds) >= 30, len(cmds)
    assert "docs/production.md" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("cmd", shell_commands(), ids=lambda c: f"L{c.line}-{' '.join(c.argv)[:50]}")
def test_every_command_is_exercised(cmd: Command, host: Host) -> None:
    rule_for(cmd).check(cmd, host)


def test_every_other_block_says_how_it_is_checked() -> None:
    for b in page_blocks():
        where = f"docs/production.md line {b.line}"
        if b.lang == "sh":
            assert b.marker is None or not b.marker.startswith("not run"), f"{where}: a shell block must run"
            continue
        assert b.marker, f"{where}: a ```{b.lang} block needs a check marker, or must be ```sh"
        if b.marker.startswith("not run here:"):
            assert b.marker.split(":", 1)[1].strip().startswith(NOT_RUN_KINDS), where
            assert b.lang == "text", where
        else:
            assert b.marker.startswith("check: "), f"{where}: unknown marker {b.marker!r}"


def test_embedded_router_configurations_are_the_checked_files() -> None:
    files = marked("check: file ")
    assert {b.marker.split()[-1] for b in files if b.marker} == {"docs/examples/bird.conf", "docs/examples/frr.conf"}
    for b in files:
        assert b.marker is not None
        path = b.marker.split()[-1]
        assert b.text == (REPO / path).read_text(), f"{path} differs from its copy in docs/production.md"
        checker = "bird -p -c" if path.endswith("bird.conf") else "vtysh --dryrun -f"
        assert any(" ".join(c.argv) == f"{checker} {path}" for c in shell_commands()), f"nothing checks {path}"


def test_the_walkthrough_config_is_valid_and_the_capacity_figures_are_its_own() -> None:
    from vgw.config.budget import BASE, WORKER_FIXED, conn_table_bytes, node_costs, worker_bytes
    from vgw.config.types import format_bytes
    from vgw.config.validate import load_document

    doc = load_document(config_block().text)
    text = DOC.read_text()
    costs = node_costs(doc)
    assert {n.id for n in doc.nodes} == {"node-1", "node-2"} and set(costs) == {"node-1", "node-2"}
    for node in doc.nodes:
        cost = costs[node.id]
        assert cost.total <= node.forwarder.memory_budget
        assert f"**{format_bytes(cost.total)}**" in text, format_bytes(cost.total)
        capacity = node.forwarder.conn_capacity
        assert f"`conn_tables({capacity})`" in text
        assert f"{format_bytes(worker_bytes(capacity))}; a node with {node.forwarder.workers}" in text
        assert f"= {format_bytes(conn_table_bytes(capacity))} + {format_bytes(WORKER_FIXED)} = " in text
        assert f"{format_bytes(BASE)} + {format_bytes(cost.connection_tables)} for {node.forwarder.workers}" in text
        assert "LIPs \u00d7 backends" in text and len(node.lips()) == 6
    # the LIP arithmetic: 800,000 connections over 3 backends at 64,512 ports per (backend, LIP)
    (svc,) = [s for v in doc.vips for s in v.services]
    assert svc.expected_connections is not None
    need = svc.expected_connections / (len(svc.backends) * 64512)
    assert f"= {need:.1f} LIPs per node" in text and all(len(n.lips()) >= need for n in doc.nodes)
    # the bgp excerpt earlier in the page is the document's own
    (excerpt,) = marked("check: part of the walk-through")
    assert excerpt.text in config_block().text


def test_the_capacity_arithmetic_uses_the_measured_figures() -> None:
    """The figures quoted are docs/benchmarks.md's, and the sums made of them are right."""
    import json

    bench = (REPO / "docs/benchmarks.md").read_text()
    cases = {}
    for line in re.findall(r"^(\{\"case\":.*\})$", bench, re.M):
        with contextlib.suppress(ValueError):  # some lines are abridged with "..."
            case = json.loads(line)
            cases[case["case"]] = case
    est, new = cases["established_1m"], cases["new_conns"]
    text = " ".join(DOC.read_text().split())
    assert "Sapphire Rapids-class" in bench and "about 15 ns/packet" in bench
    assert f"{est['mpps_per_core']:.1f} Mpps per core = {est['ns_per_pkt']} ns per packet" in text
    assert f"{new['mpps_per_core']:.1f} M new connections per second per core" in text
    assert f"({new['ns_per_pkt']:.0f} ns each)" in text
    ceiling = 1000 / (est["ns_per_pkt"] + 15)
    assert f"1 / ({est['ns_per_pkt']} ns + 15 ns) = **{ceiling:.1f} Mpps**" in text
    plan = round(ceiling / 2, 1)
    assert f"plan with half, **{plan} Mpps per worker**" in text
    assert f"4 / {plan} = {4 / plan:.2f} of a worker" in text and f"({4 / plan / 2:.0%} each)" in text


def test_fwd_env_block_is_what_the_unit_reads() -> None:
    (block,) = marked("check: env file for deploy/systemd/vgw-fwd.service")
    unit = (SYSTEMD / "vgw-fwd.service").read_text()
    example = (SYSTEMD / "fwd.env.example").read_text()
    from vgw.config.validate import load_document

    nodes = {n.id for n in load_document(config_block().text).nodes}
    for line in block.text.splitlines():
        name, _, value = line.partition("=")
        assert f"${name}" in unit or f"${{{name}}}" in unit, f"vgw-fwd.service does not use {name}"
        if name == "VGW_NODE_ID":
            assert value in nodes, f"{value} is not a node of the walk-through's config document"
        for opt in (w for w in value.split() if w.startswith("-")):
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", example), f"fwd.env.example has no {opt}"


def test_boot_parameters_fit_the_forwarder_the_guide_runs() -> None:
    """The boot configuration cannot run here, but it must agree with the rest of the page: the
    isolated cores are the workers' lcores, as many as the config's workers, and the hugepages
    reserved at boot are what the runtime reservation reserves."""
    (boot,) = marked("not run here: boot configuration")
    (env,) = marked("check: env file for deploy/systemd/vgw-fwd.service")

    def cpus(spec: str) -> set[int]:
        out: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        return out

    params = dict(re.findall(r"(\w+)=(\S+?)(?=[\s\"])", boot.text))
    lcores = re.search(r"-l (\S+)", env.text)
    assert lcores, env.text
    main_lcore, *workers = sorted(cpus(lcores.group(1)))
    for key in ("isolcpus", "nohz_full", "rcu_nocbs"):
        assert cpus(params[key]) == set(workers), key
    assert main_lcore not in cpus(params["isolcpus"])
    from vgw.config.validate import load_document

    assert {n.forwarder.workers for n in load_document(config_block().text).nodes} == {len(workers)}
    (setup,) = [c for c in shell_commands() if "--setup" in c.argv]
    size_mib = {"M": 1, "G": 1024}
    page = params["hugepagesz"]
    reserved = int(params["hugepages"]) * int(page[:-1]) * size_mib[page[-1]]
    want = setup.argv[setup.argv.index("--setup") + 1]
    assert reserved == int(want[:-1]) * size_mib[want[-1]], (reserved, want)
    assert setup.argv[setup.argv.index("--pagesize") + 1] == page == params["default_hugepagesz"]


def test_the_reasons_in_the_troubleshooting_table_are_route_controls() -> None:
    from vgw.events.catalogue import RouteReason

    section = DOC.read_text().split("### A VIP is not announced", 1)[1].split("\n### ", 1)[0]
    named = {n for row in re.findall(r"^\| ([^|]+) \|", section, re.M) for n in re.findall(r"`(\w+)`", row)}
    assert len(named) >= 10 and named <= {r.value for r in RouteReason}, named - {r.value for r in RouteReason}


def test_links_point_at_existing_pages_and_headings() -> None:
    def anchors(page: Path) -> set[str]:
        heads = re.findall(r"^#{1,6} (.+)$", page.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}

    for target, anchor in re.findall(r"\]\(([\w./-]*\.md|)(?:#([\w-]+))?\)", DOC.read_text()):
        page = DOC.parent / target if target else DOC
        assert page.is_file(), target
        if anchor:
            assert anchor in anchors(page), f"{target}#{anchor}"


@pytest.mark.parametrize("kind", ["bird", "frr"])
def test_the_router_example_routes_the_walkthrough_nodes(kind: str, tmp_path: Path) -> None:
    """docs/examples/<kind>.conf as a router, the walk-through's nodes as route control configures and
    announces them: sessions from the management addresses, one ECMP route whose next hops are the
    DPDK ports' addresses, the drain's worse MED leaves only the other path (kept as a backup), and
    nothing but /32s of the VIP range gets in."""
    daemon = {"bird": "bird", "frr": "/usr/lib/frr/bgpd"}[kind]
    if os.geteuid() != 0 or not shutil.which(daemon):
        pytest.skip(
            f"needs root (network namespaces) and {daemon} (Debian package {'bird2' if kind == 'bird' else kind})"
        )
    from tests.deploy.bgp_router import RouterLab
    from vgw.config.validate import load_document

    doc = load_document(config_block().text)
    (vip,) = [f"{v.address}/32" for v in doc.vips]
    dpdk = {n.id: str(n.external.address.ip) for n in doc.nodes}
    lab = RouterLab(doc, kind, (REPO / f"docs/examples/{kind}.conf").read_text(), tmp_path)
    try:
        for node in doc.nodes:
            lab.start_speaker(node)
            lab.announce(node)
        lab.wait("ECMP over both nodes' DPDK addresses", lambda: lab.next_hops(vip) == set(dpdk.values()))
        assert lab.established() == len(doc.nodes)
        assert not lab.resilient_groups()  # hash-threshold ECMP, as the page says
        node_1, node_2 = doc.nodes
        lab.announce(node_1, deprioritised=True)
        lab.wait("the drained node's path to leave the ECMP set", lambda: lab.next_hops(vip) == {dpdk[node_2.id]})
        lab.wait("the drained node's path as a backup", lambda: sorted(lab.meds(vip)) == [100, 1000])
        lab.announce(node_1)
        lab.wait("ECMP again after the restore", lambda: lab.next_hops(vip) == set(dpdk.values()))
        # the import filter: neither a shorter prefix of the VIP range nor another range
        for prefix in ("203.0.113.0/24", "198.51.100.0/24"):
            lab.send(node_1.id, f"neighbor 192.0.2.1 announce route {prefix} next-hop {dpdk[node_1.id]}")
        lab.send(node_1.id, f"neighbor 192.0.2.1 announce route 203.0.113.99/32 next-hop {dpdk[node_1.id]}")
        lab.wait("a later /32 of the range", lambda: lab.next_hops("203.0.113.99/32") == {dpdk[node_1.id]})
        assert lab.next_hops("203.0.113.0/24") == set() and lab.next_hops("198.51.100.0/24") == set()
    finally:
        lab.close()


# -- the checker can fail -------------------------------------------------------------------------------


def one(text: str) -> Command:
    (cmd,) = commands(Block("sh", text + "\n", 1, None))
    return cmd


def test_shell_lines_split_into_simple_commands() -> None:
    text = 'set -a; . /x/vgw.env; set +a\nA=1 b --c "d e" \\\n  f > /tmp/o\necho /vgw/x | t -f p\n'
    cmds = commands(Block("sh", text, 10, None))
    assert [c.argv for c in cmds] == [("set", "-a"), (".", "/x/vgw.env"), ("set", "+a"), ("b", "--c", "d e", "f"),
                                      ("echo", "/vgw/x"), ("t", "-f", "p")]  # fmt: skip
    assert cmds[3].env == (("A", "1"),) and cmds[3].redirects == ((">", "/tmp/o"),) and cmds[3].line == 12
    assert cmds[4].piped_into == "t" and cmds[5].piped_into is None
    with pytest.raises(ValueError, match="continuation"):
        commands(Block("sh", "a \\\n", 1, None))


def test_a_command_without_a_rule_fails() -> None:
    with pytest.raises(AssertionError, match="no rule binds"):
        rule_for(one("curl http://203.0.113.10/"))


def test_a_vgwctl_command_as_the_guide_writes_it_passes(host: Host) -> None:
    vgwctl_parses(one("vgwctl node drain node-1 --timeout 10m"), host)  # its misspellings below fail


@pytest.mark.parametrize(
    ("check", "line", "error"),
    [
        (vgwctl_parses, "vgwctl node drain node-1 --timeuot 10m", "vgwctl rejects"),
        (vgwctl_parses, "vgwctl nodes drain node-1", "vgwctl rejects"),
        (vgwctl_parses, "vgwctl events tail --since 10m -o json", "vgwctl rejects"),  # an option tail does not take
        (vgwctl_parses, "vgwctl forwarder", "does not listen on"),  # the default socket is not the unit's
        (options_in_help, "dpdk-devbind.py --bindd=vfio-pci 0000:3b:00.0", "has no --bindd"),
        (sysctl_as_the_lab, "sysctl -w net.ipv4.fib_multipath_hash_policy=0", "does not set"),
        (units_exist, "systemctl enable --now vgw-forwarder", "no shipped unit"),
        (units_exist, "systemctl enable --now vgw-shim@node-9", "not a node"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_wrong_option_or_lab_form_fails(check: Check, line: str, error: str, host: Host) -> None:
    with pytest.raises(AssertionError, match=error):
        check(one(line), host)


def test_a_broken_router_configuration_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bird.conf"
    bad.write_text((REPO / "docs/examples/bird.conf").read_text().replace("merge paths yes", "merge pathz yes"))
    if not shutil.which("bird"):
        pytest.skip("bird is not installed here (Debian package bird2)")
    r = subprocess.run(["bird", "-p", "-c", str(bad)], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode != 0
