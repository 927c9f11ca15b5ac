"""systemd units for bare-metal nodes: systemd's own checks, hardening, capabilities per component."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.common import SYSTEMD, security_init_dir

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


def unit(path: Path) -> dict[str, list[str]]:
    """[Service] keys with every value (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


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
    s = unit(path)
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
    allowed = re.compile(r"Command (/opt/vgw/bin/vgw-[a-z]+|/usr/local/bin/vgw-fwd) is not executable")
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


def env_file(text: str) -> dict[str, str]:
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


@pytest.mark.parametrize("name", IDENTITIES)
def test_every_nats_client_unit_requires_its_own_identity(name: str) -> None:
    s = unit(SYSTEMD / f"{name}.service")
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
    example = env_file((SYSTEMD / "vgw.env.example").read_text())
    # set in vgw.env it would override every unit's identity or the per-node instance
    for key in example:
        assert not key.startswith(("VGW_NATS_", "VGW_CONFIG_", "VGW_NODE_ID")), key
    assert "nats://" not in (SYSTEMD / "vgw.env.example").read_text()


def test_nats_unit_runs_the_generated_configuration() -> None:
    s = unit(SYSTEMD / "vgw-nats.service")
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
        e = env_file((sec / "identities" / ident / "vgw.env").read_text())
        assert all(u.startswith("tls://") for u in e["VGW_NATS_URL"].split(",")), name
        assert e["VGW_NATS_TLS_CA"] == f"{SEC}/ca/ca.crt"
        assert e["VGW_NATS_TLS_CERT"] == f"{SEC}/identities/{ident}/tls.crt"
        assert e["VGW_NATS_TLS_KEY"] == f"{SEC}/identities/{ident}/tls.key"
        assert e["VGW_NATS_NKEY_SEED"] == f"{SEC}/identities/{ident}/nkey.seed"
        assert e["VGW_NATS_INBOX_PREFIX"] == f"_INBOX_{ident}"
        assert not any("INSECURE" in k for k in e), name
    config = unit(SYSTEMD / "vgw-config.service")
    addr = next(v for v in config["Environment"] if v.startswith("VGW_CONFIG_ADDR="))
    if not addr.partition("=")[2].startswith(("127.0.0.1:", "[::1]:", "localhost:")):
        e = env_file((sec / "identities/config/vgw.env").read_text())
        assert e["VGW_CONFIG_TLS_CERT"] == f"{SEC}/config-api/server.crt"
        assert e["VGW_CONFIG_TLS_KEY"] == f"{SEC}/config-api/server.key"
        assert e["VGW_CONFIG_TLS_CLIENT_CA"] == f"{SEC}/ca/ca.crt"
        assert e["VGW_CONFIG_TOKENS_FILE"] == f"{SEC}/config-api/tokens.json"
    conf = (sec / "nats/nats-server.conf").read_text()
    assert "include ./tls.conf" in conf and "include ./authorization.conf" in conf
    assert "store_dir" in conf and "/var/lib/vgw-nats" in conf
    assert re.search(r"verify:\s*true", (sec / "nats/tls.conf").read_text())
