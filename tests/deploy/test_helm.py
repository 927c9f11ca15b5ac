"""The Helm chart, rendered by Helm's own template engine and validated against Kubernetes' schemas.

Rendering uses helm-python-sdk (Helm v4's Go SDK as a C library; no helm binary, no cluster, no
network). The nats dependency is not vendored, so it is absent from these renders: what is checked
is this chart's own templates. Every manifest is validated with kubernetes-validate (the
Kubernetes OpenAPI schemas as JSON Schema, strict: unknown fields are errors) for the oldest
Kubernetes the chart supports and the newest the package knows.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.common import ALERTS, CHART, DASHBOARDS, render_chart

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (make setup)")

K8S_VERSIONS = ["1.27", kubernetes_validate.latest_version()]
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "grafanaDashboards": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
        "natsCredsSecret": "vgw-nats-creds",
        "config": {"tokenSecret": "vgw-config-token"},
        "otel": {"endpoint": "http://jaeger-collector.observability:4317"},
        "extraEnv": {"VGW_NATS_CONNECT_TIMEOUT_S": "5"},
        "imagePullSecrets": [{"name": "regcred"}],
        "node": {
            "tolerations": [{"operator": "Exists"}],
            "extraVolumes": [{"name": "vfio", "hostPath": {"path": "/dev/vfio"}}],
            "extraVolumeMounts": [{"name": "vfio", "mountPath": "/dev/vfio"}],
        },
    },
    "external-nats": {"nats": {"enabled": False}, "natsUrl": "tls://nats-1:4222,tls://nats-2:4222"},
    "node-only": {"config": {"enabled": False}, "healthcheck": {"enabled": False}, "monitor": {"enabled": False}},
}


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def containers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}


def check_service_monitor(doc: dict[str, Any]) -> None:
    # A CRD: kubernetes-validate has no schema for it, so check the fields the operator needs.
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["spec"]["selector"]["matchLabels"]
    for ep in doc["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "relabelings"}, ep
        assert ep["port"] in ("metrics", "metrics-rc") and ep["path"] == "/metrics"
        assert any(r["targetLabel"] == "job" and r["replacement"].startswith("vgw-") for r in ep["relabelings"])


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_manifests_are_valid_kubernetes_objects(values: dict[str, Any]) -> None:
    docs = render_chart(values)
    assert docs
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc)
            continue
        if doc["kind"] == "PrometheusRule":  # a CRD too: its content is checked below
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {e.message} at {list(e.path)}"
                )


def test_the_kubernetes_check_catches_mistakes() -> None:
    ds = by_kind(render_chart())[("DaemonSet", "vgw-node")]
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = "NET_ADMIN"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def test_what_each_form_renders() -> None:
    kinds = {
        k: sorted(n for (kk, n) in by_kind(render_chart(v)) if kk in ("Deployment", "DaemonSet"))
        for k, v in VALUE_SETS.items()
    }
    assert kinds["defaults"] == ["vgw-config", "vgw-healthcheck", "vgw-monitor", "vgw-node"]
    assert kinds["node-only"] == ["vgw-node"]
    assert not any(d["kind"] == "ServiceMonitor" for d in render_chart())
    assert sum(d["kind"] == "ServiceMonitor" for d in render_chart(VALUE_SETS["everything"])) == 4


def test_node_daemonset_host_network_hugepages_capabilities() -> None:
    ds = by_kind(render_chart())[("DaemonSet", "vgw-node")]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = containers(ds)
    assert list(c) == ["fwd", "shim", "routectl"]
    fwd = c["fwd"]
    res = fwd["resources"]
    huge = [k for k in res["limits"] if k.startswith("hugepages-")]
    assert huge and all(res["requests"][k] == res["limits"][k] for k in huge)  # Kubernetes requires equal
    assert "memory" in res["requests"]
    assert fwd["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "IPC_LOCK"]}
    assert fwd["securityContext"]["allowPrivilegeEscalation"] is False
    assert not any(x.get("securityContext", {}).get("privileged") for x in c.values())
    for name in ("shim", "routectl"):
        assert c[name]["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert "add" not in c[name]["securityContext"]["capabilities"]
    assert c["routectl"]["securityContext"]["runAsNonRoot"] is True
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["hugepages"]["emptyDir"]["medium"] == "HugePages"
    mounts = {m["name"]: m["mountPath"] for m in fwd["volumeMounts"]}
    assert mounts["hugepages"] == "/dev/hugepages" and mounts["run"] == "/run/vgw"
    assert {m["name"]: m["mountPath"] for m in c["shim"]["volumeMounts"]}["run"] == "/run/vgw"
    assert "/run/vgw/fwd.sock" in fwd["command"]
    for name in ("shim", "routectl"):
        envs = {e["name"]: e for e in c[name]["env"]}
        assert envs["VGW_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert envs["VGW_NATS_URL"]["value"] == "nats://vgw-nats.vgw.svc:4222"


def test_probes_use_healthz_and_readyz_on_the_metrics_port() -> None:
    docs = by_kind(render_chart())
    checked = 0
    for (kind, _name), doc in docs.items():
        if kind not in ("Deployment", "DaemonSet"):
            continue
        for name, c in containers(doc).items():
            if name == "fwd":
                assert c["livenessProbe"]["exec"]["command"] == ["test", "-S", "/run/vgw/fwd.sock"]
                continue
            port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
            live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
            assert live["path"] == "/healthz" and ready["path"] == "/readyz", name
            assert live["port"] == ready["port"] and live["port"] in port_names, name
            metrics_addr = {e["name"]: e.get("value") for e in c["env"]}["VGW_METRICS_ADDR"]
            assert metrics_addr == f"0.0.0.0:{port_names[live['port']]}", name
            checked += 1
    assert checked == 5  # config, healthcheck, monitor, shim, routectl


def test_values_schema_rejects_bad_values() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        for bad in (
            {"logLevel": "loud"},
            {"metricsPorts": {"shim": 70000}},
            {"natsUrl": "http://nats:4222"},
            {"node": {"forwarder": {"eal": "-l 0-1"}}},
            {"image": {"pullPolicy": "Sometimes"}},
        ):
            with pytest.raises(helm.HelmError):
                chart.validate_schema(bad)
    with pytest.raises(helm.HelmError, match="natsUrl is required"):
        render_chart({"nats": {"enabled": False}})


def test_chart_metadata_and_lint() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    (nats,) = [d for d in meta["dependencies"] if d["name"] == "nats"]
    assert nats["repository"] == "https://nats-io.github.io/k8s/helm/charts/" and nats["condition"] == "nats.enabled"
    assert not (CHART / "charts").exists(), "the nats chart is a dependency, not vendored"
    result = helm.lint(str(CHART))
    assert result["errors"] == []
    # severity 4 = error; the only warning allowed is the (deliberately) unfetched dependency
    problems = [
        m for m in result["messages"] if m["severity"] >= 2 and "missing these dependencies: nats" not in m["error"]
    ]
    assert problems == []


def test_dashboards_and_alerts_ship_in_the_chart_unchanged() -> None:
    docs = by_kind(render_chart(VALUE_SETS["everything"]))
    cm = docs[("ConfigMap", "vgw-dashboards")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    assert {k: json.loads(v) for k, v in cm["data"].items()} == files
    rule = docs[("PrometheusRule", "vgw-alerts")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())  # {{ $labels }} stays for Prometheus
    assert ("ConfigMap", "vgw-dashboards") not in by_kind(render_chart())
