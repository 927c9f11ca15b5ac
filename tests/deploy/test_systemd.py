"""systemd units for bare-metal nodes: systemd's own checks, hardening, capabilities per component."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.common import SYSTEMD, security_init_dir
from tests.deploy.shipped import systemd_env_file, systemd_unit

UNITS = sorted(SYSTEMD.glob("*.service"))
# What each component may keep: the forwarder needs DPDK's three; nothing else needs any.
CAPS = {"vgw-fwd": {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK"}, "vgw-monitor": {"CAP_NET_ADMIN"}}
SEC = "/etc/vgw/security"
# The NATS identity of each unit that talks to NATS; %i (the instance) is the node id.
IDENTITIES = {
    "vgw-config": "config",
    "vgw-healthcheck": "healthcheck",
    "vgw-monitor": "monitor",
    "vgw-shim@": "shim-%i",
    "vgw-routectl@": "routectl-%i",
}
ANALYZE = shutil.which("systemd-analyze")


def test_units_exist_for_every_component() -> None:
    assert {p.stem for p in UNITS} == {
        "vgw-nats",
        "vgw-fwd",
        "vgw-shim@",  # one instance per node id: vgw-shim@node-1
        "vgw-routectl@",
        "vgw-config",
        "vgw-healthcheck",
        "vgw-monitor",
    }


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_hardening_and_settings(path: Path) -> None:
    s = systemd_unit(path)
    assert s["Restart"] == ["on-failure"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ProtectHome"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    if path.stem != "vgw-nats":
        assert "-/etc/vgw/vgw.env" in s["EnvironmentFile"]
    caps = set(s["CapabilityBoundingSet"][-1].split())
    assert caps == CAPS.get(path.stem, set()), path.stem
    ambient = set(s.get("AmbientCapabilities", [""])[-1].split())
    assert ambient <= caps
    if path.stem == "vgw-nats":
        assert s["User"] == ["vgw-nats"]
    elif path.stem != "vgw-fwd":
        assert s["User"] == ["vgw"], "only the forwarder runs as root"
    else:
        # the control socket goes to the shim's group; the forwarder checks peers' credentials too
        assert "--socket-group vgw" in s["ExecStart"][-1] and s["SupplementaryGroups"] == ["vgw"]
    metrics = [v for v in s.get("Environment", []) if v.startswith("VGW_METRICS_ADDR=")]
    if path.stem not in ("vgw-fwd", "vgw-nats"):
        assert metrics and re.fullmatch(r"VGW_METRICS_ADDR=127\.0\.0\.1:91\d\d", metrics[0])
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.read_string(path.read_text())
    assert cp["Install"]["WantedBy"] == "vgw.target"


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    for p in [*UNITS, SYSTEMD / "vgw.target"]:
        shutil.copy(p, tmp_path / p.name)
    names = [f"./{p.name}" for p in sorted(tmp_path.iterdir())]
    r = subprocess.run(
        [ANALYZE, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    # The binaries are installed by the packaging, not on this machine: that is the only complaint allowed.
    allowed = re.compile(r"Command (/opt/vgw/bin/vgw-[a-z-]+|/usr/local/bin/vgw-fwd) is not executable")
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if line.strip() and not allowed.search(line)]
    assert complaints == []


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_exposure_level(path: Path) -> None:
    r = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(path)], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    # systemd calls <= 4.0 "OK"; the forwarder keeps its three capabilities, everything else ~1.5
    assert float(m.group(1)) <= (4.0 if path.stem in CAPS else 2.0), r.stdout[-3000:]


# --- secure by default (issue #15) --------------------------------------------------------------------


@pytest.mark.parametrize("name", IDENTITIES)
def test_every_nats_client_unit_requires_its_own_identity(name: str) -> None:
    s = systemd_unit(SYSTEMD / f"{name}.service")
    files = s["EnvironmentFile"]
    ident = f"{SEC}/identities/{IDENTITIES[name]}/vgw.env"
    # no leading "-": a missing identity stops the unit instead of starting it without credentials
    assert ident in files, files
    # after the site-wide file (which must not override an identity), before the local overrides
    assert files.index("-/etc/vgw/vgw.env") < files.index(ident) < len(files) - 1
    assert not any("INSECURE" in v for v in s.get("Environment", []))
    if name.endswith("@"):  # the instance name is the node id, and picks the node's identity
        assert "VGW_NODE_ID=%i" in s["Environment"]


def test_the_shared_env_example_carries_no_weakening_or_override() -> None:
    example = systemd_env_file(SYSTEMD / "vgw.env.example")
    # set in vgw.env it would override every unit's identity or the per-node instance
    for key in example:
        assert not key.startswith(("VGW_NATS_", "VGW_CONFIG_", "VGW_NODE_ID")), key
    assert "nats://" not in (SYSTEMD / "vgw.env.example").read_text()


def test_nats_unit_runs_the_generated_configuration() -> None:
    s = systemd_unit(SYSTEMD / "vgw-nats.service")
    assert s["ExecStart"] == [f"/usr/sbin/nats-server -c {SEC}/nats/nats-server.conf"]
    assert s["StateDirectory"] == ["vgw-nats"]
    assert "u vgw-nats " in (SYSTEMD / "vgw.sysusers.conf").read_text()


def test_generated_identity_env_files_carry_the_credentials(tmp_path: Path) -> None:
    """What the units load, from a real `vgwctl security init` with the paths the units use: every
    identity connects over TLS with its certificate and nkey, the config API that listens on every
    interface has TLS, a client CA and tokens, and nats-server accepts the generated configuration."""
    init_dir = security_init_dir()
    sec = tmp_path / "security"
    init_dir(sec, nodes=["node-1"], path_prefix=SEC, store_dir="/var/lib/vgw-nats")
    for name, template in IDENTITIES.items():
        ident = template.replace("%i", "node-1")
        e = systemd_env_file(sec / "identities" / ident / "vgw.env")
        assert all(u.startswith("tls://") for u in e["VGW_NATS_URL"].split(",")), name
        assert e["VGW_NATS_TLS_CA"] == f"{SEC}/ca/ca.crt"
        assert e["VGW_NATS_TLS_CERT"] == f"{SEC}/identities/{ident}/tls.crt"
        assert e["VGW_NATS_TLS_KEY"] == f"{SEC}/identities/{ident}/tls.key"
        assert e["VGW_NATS_NKEY_SEED"] == f"{SEC}/identities/{ident}/nkey.seed"
        assert e["VGW_NATS_INBOX_PREFIX"] == f"_INBOX_{ident}"
        assert not any("INSECURE" in k for k in e), name
    config = systemd_unit(SYSTEMD / "vgw-config.service")
    addr = next(v for v in config["Environment"] if v.startswith("VGW_CONFIG_ADDR="))
    if not addr.partition("=")[2].startswith(("127.0.0.1:", "[::1]:", "localhost:")):
        e = systemd_env_file(sec / "identities/config/vgw.env")
        assert e["VGW_CONFIG_TLS_CERT"] == f"{SEC}/config-api/server.crt"
        assert e["VGW_CONFIG_TLS_KEY"] == f"{SEC}/config-api/server.key"
        assert e["VGW_CONFIG_TLS_CLIENT_CA"] == f"{SEC}/ca/ca.crt"
        assert e["VGW_CONFIG_TOKENS_FILE"] == f"{SEC}/config-api/tokens.json"
    conf = (sec / "nats/nats-server.conf").read_text()
    assert "include ./tls.conf" in conf and "include ./authorization.conf" in conf
    assert "store_dir" in conf and "/var/lib/vgw-nats" in conf
    assert re.search(r"verify:\s*true", (sec / "nats/tls.conf").read_text())


# --- node bootstrap and shutdown order (issue #17) -------------------------------------------------


def node_units(node: str) -> dict[str, dict[str, list[str]]]:
    """[Unit] of the three units of one node, instantiated for node (%i)."""
    names = {"vgw-fwd.service": "vgw-fwd.service", f"vgw-shim@{node}.service": "vgw-shim@.service",
             f"vgw-routectl@{node}.service": "vgw-routectl@.service"}  # fmt: skip
    return {name: words(systemd_unit(SYSTEMD / f, node, "[Unit]")) for name, f in names.items()}


def words(settings: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each key's values split into words: After=a b and After=a then After=b name the same units."""
    return {k: [w for v in vs for w in v.split()] for k, vs in settings.items()}


def starts_after(units: dict[str, dict[str, list[str]]], a: str, b: str) -> bool:
    """Whether a is ordered (directly or through other units) after b: After= in a, or Before= in b.
    systemd stops units in the reverse order, so then a stops, completely, before b begins to."""
    seen, todo = set(), [a]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        deps = set(units[n].get("After", [])) | {m for m, u in units.items() if n in u.get("Before", [])}
        if b in deps:
            return True
        todo.extend(d for d in deps if d in units)
    return False


def test_route_control_stops_and_withdraws_before_the_forwarder() -> None:
    units = node_units("node-1")
    fwd, shim, rc = "vgw-fwd.service", "vgw-shim@node-1.service", "vgw-routectl@node-1.service"
    # stop order: route control (withdraws on SIGTERM), then the shim, then the forwarder
    assert starts_after(units, rc, shim) and starts_after(units, shim, fwd) and starts_after(units, rc, fwd)
    assert not starts_after(units, fwd, rc) and not starts_after(units, shim, rc)  # no cycle
    # directly, not only through the shim: the order holds on a node whose shim unit is masked
    without_shim = {n: u for n, u in units.items() if n != shim}
    assert starts_after(without_shim, rc, fwd)
    # restarting the forwarder alone is the hitless restart: it must not take route control (and the
    # node's routes) with it
    for key in ("StopPropagatedFrom", "PartOf", "BindsTo", "Requires"):
        assert fwd not in units[rc].get(key, []), key
    # the check notices a unit that lost its ordering
    broken = {**units, rc: {**units[rc], "After": ["network-online.target"]}}
    assert not starts_after(broken, rc, fwd)


def test_the_forwarder_renders_its_settings_from_the_config_at_every_start() -> None:
    s = systemd_unit(SYSTEMD / "vgw-fwd.service")
    (pre,) = s["ExecStartPre"]
    (start,) = s["ExecStart"]
    argv = pre.split()
    assert argv[0] == "/opt/vgw/bin/vgw-fwd-config"
    out = argv[argv.index("--output") + 1]
    assert out.startswith("/run/vgw/")  # a runtime file, never a stale hand-written one
    fwd_args = start.split()
    assert fwd_args[fwd_args.index("--config") + 1] == out
    assert argv[argv.index("--node") + 1] == "${VGW_NODE_ID}"
    # the node's shim identity reads the store; the source defaults to NATS and a file may replace it
    assert "--nats-env" in argv and argv[argv.index("--nats-env") + 1].endswith("/shim-${VGW_NODE_ID}/vgw.env")
    assert "VGW_FWD_CONFIG_SOURCE=--from-nats" in s["Environment"]
    assert "/etc/vgw/fwd.env" in s["EnvironmentFile"]  # required: it names the node
    example = systemd_env_file(SYSTEMD / "fwd.env.example")
    assert example["VGW_NODE_ID"] and example["VGW_FWD_EAL"]
    assert not (SYSTEMD / "fwd.conf.example").exists(), "the settings are rendered, not hand-written"
    # the wait for the config (vgw-fwd-config --wait, 300 s by default) fits in the start timeout
    assert float(s["TimeoutStartSec"][0].removesuffix("s")) > 300
