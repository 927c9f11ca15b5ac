"""Dashboards, alert rules and the Prometheus config: they parse, promtool accepts them, and every
metric a query names is one the VGW services really export -- read from the /metrics of the real
services started against a real nats-server, the shim connected to a real vgw-fwd on DPDK ring vdevs
(where that cannot run -- not root, no DPDK build -- the forwarder's counters come from the shim's
collector fed with a STATS reply of the forwarder's shape, and the test says so)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.common import ALERTS, DASHBOARDS, DEPLOY, DOCKERFILES, REPO, console_scripts, healthcheck_argv
from tests.support.nats_server import NatsServer, free_port

PROMTOOL = shutil.which("promtool")
# Series Prometheus itself makes.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "rate", "irate", "increase",
    "delta", "changes", "resets", "histogram_quantile", "sort", "sort_desc", "scalar", "vector", "absent",
    "absent_over_time", "abs", "clamp_min", "clamp_max", "label_replace", "time", "max_over_time",
    "min_over_time", "avg_over_time", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
# Each service and the prefix its own metrics carry (the library's vgw_bus_*/vgw_store_* come with all).
SERVICES = {
    "vgw-config": "vgw_config_",
    "vgw-healthcheck": "vgw_healthcheck_",
    "vgw-shim": "vgw_shim_",
    "vgw-routectl": "vgw_routectl_",
    "vgw-monitor": "vgw_monitor_",
}


def series_names(text: str) -> set[str]:
    """Names a PromQL query can use for the families in a /metrics text."""
    out: set[str] = set()
    for fam in text_string_to_metric_families(text):
        if fam.type == "counter":
            out |= {f"{fam.name}_total", f"{fam.name}_created"}
        elif fam.type == "histogram":
            out |= {f"{fam.name}_bucket", f"{fam.name}_sum", f"{fam.name}_count", f"{fam.name}_created"}
        elif fam.type == "summary":
            out |= {fam.name, f"{fam.name}_sum", f"{fam.name}_count"}
        else:
            out.add(fam.name)
        out |= {s.name for s in fam.samples}
    return out


def metrics_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (labels, strings, ranges and grouping clauses removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\w+", " ", s)
    idents = re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s)
    return {i for i in idents if i not in FUNCTIONS}


def dashboard_queries() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "expr" in t]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["query"]["query"])
                assert m, var
                exprs.append(m.group(1))
        out[path.name] = exprs
    return out


def alert_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


# --- the metrics the services export ----------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def run_and_scrape(script: str, prefix: str, env: dict[str, str], log: Path) -> str:
    port = free_port()
    exe = Path(sys.executable).parent / script
    cmd = (
        [str(exe)]
        if exe.exists()
        else [
            sys.executable,
            "-c",
            f"import sys; from {console_scripts()[script].replace(':', ' import ')}; sys.exit(main())",
        ]
    )
    with log.open("wb") as f:
        proc = subprocess.Popen(
            cmd, env={**env, "VGW_METRICS_ADDR": f"127.0.0.1:{port}"}, stdout=f, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{script} exited with {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                text = scrape(port)
                if prefix in text:
                    check_image_healthchecks(port, env)
                    return text
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{script}: no {prefix}* metrics in 30 s: {log.read_text()[-2000:]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_image_healthchecks(port: int, env: dict[str, str]) -> None:
    """Each image's HEALTHCHECK (python -c with urllib) passes against the running service's /healthz,
    with VGW_METRICS_ADDR as the containers set it."""
    for dockerfile in DOCKERFILES:
        argv = healthcheck_argv(dockerfile)
        assert argv[0] == "python"
        r = subprocess.run(
            [sys.executable, *argv[1:]],
            env={**env, "VGW_METRICS_ADDR": f"0.0.0.0:{port}"},
            capture_output=True,
            timeout=10,
        )
        assert r.returncode == 0, (dockerfile.name, r.stderr.decode()[-1000:])


def forwarder_collector_text() -> str:
    """The shim's forwarder metrics, from its collector fed with a STATS reply of vgw-fwd's shape."""
    from dataplane.shim.main import ForwarderCollector

    stats: dict[str, Any] = {
        "generation": 3,
        "counters": {
            "conn_active": 5, "conn_halfopen": 2, "conn_new": 9, "drop_no_service": 1, "fwd_drop_tx_full": 2, "rx": 100,
        },
        "ports": {"ext": {"rx_packets": 10, "tx_packets": 9, "rx_bytes": 1000, "tx_bytes": 900}},
        "services": {
            "web": {
                "vip": "192.0.2.10", "port": 80, "proto": "tcp",
                "packets_in": 4, "packets_out": 4, "bytes_in": 400, "bytes_out": 400, "conn_new": 1,
                "syn_cookie_sent": 3, "syn_cookie_ok": 1, "syn_cookie_bad": 1, "conn_evicted": 0,
                "drop_limit_cps": 0, "drop_limit_src24": 0, "drop_no_conn": 2, "rst_sent": 0,
                "lport_exhausted": 0, "syn_proxy_active": 1,
            }
        },
        "lips": {"198.18.0.100": {"lport_exhausted": 1}},
    }  # fmt: skip
    reg = CollectorRegistry()
    reg.register(ForwarderCollector(SimpleNamespace(fwd_up=True, last_stats=stats)))  # type: ignore[arg-type]
    return generate_latest(reg).decode()


FWD_BIN = REPO / "dataplane" / "build" / "vgw-fwd"


@contextlib.contextmanager
def ring_forwarder(tmp_path: Path) -> Iterator[Path | None]:
    """A real vgw-fwd on DPDK ring vdevs (no NIC, no hugepages, no namespaces), as
    tests/forwarder/test_shim_desired.py runs it; None where that cannot run (not root, no build)."""
    if os.geteuid() != 0 or not FWD_BIN.exists():
        yield None
        return
    prefix = f"vgwdep{secrets.token_hex(4)}"
    sock = tmp_path / "fwd.sock"
    log = tmp_path / "fwd.log"
    settings = tmp_path / "fwd.conf"
    settings.write_text(
        "mode dual-arm\next net_ring0 203.0.113.1/24\nint net_ring1 198.18.0.1/16\n"
        f"socket {sock}\nconn-capacity 4096\nworkers 1\n"
    )
    eal = [
        "--no-huge",
        "-m",
        "128",
        "--file-prefix",
        prefix,
        "--lcores",
        "0@0,1@0",
        "--no-pci",
        "--log-level",
        "*:error",
    ]
    cmd = [str(FWD_BIN), *eal, "--vdev", "net_ring0", "--vdev", "net_ring1", "--", "--config", str(settings)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while "vgw-fwd ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield sock
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        from tests.forwarder.topology import cleanup_dpdk_files

        cleanup_dpdk_files(prefix)


@pytest.fixture
def exported(
    nats_server: NatsServer, child_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[set[str], list[str]]]:
    env = {
        **child_env,
        "VGW_NATS_URL": nats_server.url,
        "VGW_NODE_ID": "node-1",
        "OTEL_TRACES_EXPORTER": "none",
        "VGW_FWD_SOCKET": str(tmp_path / "no-forwarder.sock"),
        "VGW_RUN_DIR": str(tmp_path / "routectl"),
        "VGW_MONITOR_STEER": "false",
    }
    (tmp_path / "routectl").mkdir(mode=0o700)
    names: set[str] = set()
    unverified: list[str] = []
    with ring_forwarder(tmp_path) as fwd_sock:
        if fwd_sock is not None:
            # the shim, connected to a running forwarder, exports its counters (vgw_forwarder_*)
            env["VGW_FWD_SOCKET"] = str(fwd_sock)
        else:
            # no forwarder here: the shim's collector, fed with a STATS reply of the forwarder's shape
            unverified.append("vgw-fwd (forwarder metrics from the shim's collector, not a running forwarder)")
            names |= series_names(forwarder_collector_text())
        for script, own_prefix in SERVICES.items():
            target = console_scripts().get(script)
            if target is None or importlib.util.find_spec(target.partition(":")[0]) is None:
                unverified.append(script)
                continue
            # with a forwarder, wait until the shim has read its STATS
            prefix = "vgw_forwarder_port_packets" if script == "vgw-shim" and fwd_sock is not None else own_prefix
            names |= series_names(run_and_scrape(script, prefix, env, tmp_path / f"{script}.log"))
        yield names, unverified


def test_every_query_names_an_exported_metric(exported: tuple[set[str], list[str]]) -> None:
    names, unverified = exported
    assert {
        "vgw_bus_connected",
        "vgw_healthcheck_backends",
        "vgw_config_revision",
        "vgw_forwarder_drops_total",
    } <= names
    unknown: dict[str, set[str]] = {}
    for board, exprs in dashboard_queries().items():
        for expr in exprs:
            if bad := metrics_in(expr) - names - PROMETHEUS_SERIES:
                unknown.setdefault(board, set()).update(bad)
    for expr in alert_queries():
        if bad := metrics_in(expr) - names - PROMETHEUS_SERIES:
            unknown.setdefault("alerts.yml", set()).update(bad)
    assert unknown == {}, f"metrics no service exports (services not started: {unverified})"
    # Only services not yet in the package may be unverified, and nothing may query their metrics.
    assert {u.split()[0] for u in unverified} <= {"vgw-monitor", "vgw-fwd"}
    for script in unverified:
        if script not in SERVICES:
            continue
        prefix = SERVICES[script]
        used = [e for exprs in [*dashboard_queries().values(), alert_queries()] for e in exprs if prefix in e]
        assert used == [], f"{script} is not runnable here, so its metrics cannot be queried yet"


def test_metric_name_extraction() -> None:
    assert metrics_in('sum by (le, kind) (rate(vgw_x_bucket{a="b",c=~"$instance"}[$__rate_interval]))') == {
        "vgw_x_bucket"
    }
    assert metrics_in('scalar(max(a_b)) - c_d{node="x"} > 0 and on(instance) up == 0') == {"a_b", "c_d", "up"}
    assert metrics_in("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))") == {"h_bucket"}


# --- dashboards ------------------------------------------------------------------------------------------


def test_dashboards_are_generated_from_generate_py(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert fresh == committed, "run: python3 deploy/dashboards/generate.py"


def test_dashboards_parse_and_cover_the_topics() -> None:
    titles = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["schemaVersion"] >= 36
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in board["panels"]:
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p.get("targets", []):
                assert t["datasource"]["uid"] in ("${datasource}", "jaeger"), (path.name, p["title"])
        titles[path.stem] = [p["title"] for p in board["panels"]]
    flat = {k: " | ".join(v).lower() for k, v in titles.items()}
    assert "packets/s into each service" in flat["vgw-traffic"] and "connections" in flat["vgw-traffic"]
    assert "drops/s by reason" in flat["vgw-drops"]
    assert (
        "syn cookies/s by result" in flat["vgw-protection"]
        and "half-open connections per node" in flat["vgw-protection"]
    )
    assert "evicted" in flat["vgw-protection"] and "rate-limit drops" in flat["vgw-protection"]
    assert "rsts sent" in flat["vgw-protection"] and "per lip" in flat["vgw-protection"]
    assert "probe streams by state" in flat["vgw-backends"]
    assert "vips per node by state" in flat["vgw-routes"]
    assert "success ratio per vip and path" in flat["vgw-vips"]
    assert (
        "health event -> withdraw" in flat["vgw-control-plane"]
        and "config change -> applied" in flat["vgw-control-plane"]
    )


# --- Prometheus ------------------------------------------------------------------------------------------

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")


@needs_promtool
def test_alert_rules_pass_promtool_check_rules() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_alert_rules_unit_tests() -> None:
    r = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_required_alerts_exist() -> None:
    names = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert {
        "VgwVipAnnouncedByNoNode",
        "VgwNoVipAnnounced",
        "VgwForwarderDown",
        "VgwHealthFlapping",
        "VgwNatsDisconnected",
        "VgwVipDown",
        "VgwUnderSynFlood",
        "VgwHalfOpenConnectionsHigh",
        "VgwLipPortsExhausted",
    } <= names
    (nats,) = [
        r
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        if r["alert"] == "VgwNatsDisconnected"
    ]
    assert nats["expr"] == "vgw_bus_connected == 0"


@needs_promtool
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]  # where compose mounts it
    cfg["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert {f"vgw-{s}" for s in ("config", "healthcheck", "monitor", "routectl", "shim")} <= jobs
