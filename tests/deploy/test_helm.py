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
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.common import ALERTS, CHART, DASHBOARDS, SECURED_VALUES, render_chart, security_init_dir

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (make setup)")

K8S_VERSIONS = ["1.27", kubernetes_validate.latest_version()]
SECRETS_SCRIPT = CHART.parent / "vgw-secrets.sh"
INSECURE_VALUES = yaml.safe_load((CHART / "values-insecure.yaml").read_text())
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": SECURED_VALUES,
    "insecure": INSECURE_VALUES,
    "everything": {
        **SECURED_VALUES,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "grafanaDashboards": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
        "natsCredsSecret": "vgw-nats-creds",
        "config": {"tokenSecret": "vgw-config-token"},
        "otel": {"endpoint": "http://jaeger-collector.observability:4317"},
        "extraEnv": {"VGW_NATS_CONNECT_TIMEOUT_S": "5"},
        "imagePullSecrets": [{"name": "regcred"}],
        "node": {
            "devices": {"worker-1": {"ext": "0000:3b:00.0", "int": "0000:3b:00.1"}},
            "forwarder": {"connSyncKeySecret": "vgw-conn-sync", "int": "net_af_packet1"},
            "tolerations": [{"operator": "Exists"}],
            "extraVolumes": [{"name": "vfio", "hostPath": {"path": "/dev/vfio"}}],
            "extraVolumeMounts": [{"name": "vfio", "mountPath": "/dev/vfio"}],
        },
    },
    "external-nats": {
        "security": {"existingSecret": "vgw-sec", "nodesSecret": "vgw-sec-n"},
        "nats": {"enabled": False},
        "natsUrl": "tls://nats-1:4222,tls://nats-2:4222",
    },
    "node-only": {
        **SECURED_VALUES,
        "config": {"enabled": False},
        "healthcheck": {"enabled": False},
        "monitor": {"enabled": False},
    },
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
    assert kinds["insecure"] == kinds["defaults"]
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
        assert envs["VGW_NATS_URL"]["value"] == "tls://vgw-nats.vgw.svc:4222"


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
            {"security": {"insecure": "yes"}},
            {"security": {"existingSecret": "Not A Name"}},
            {"node": {"devices": {"worker-1": {"ext": "x", "nic": "y"}}}},
            {"node": {"devices": {"Worker 1": {"ext": "x"}}}},
            {"node": {"forwarder": {"ext": "eth1; rm -rf /"}}},
            {"node": {"forwarder": {"preStopWaitSeconds": 0}}},
        ):
            with pytest.raises(helm.HelmError):
                chart.validate_schema(bad)
    with pytest.raises(helm.HelmError, match="natsUrl is required"):
        render_chart({**SECURED_VALUES, "nats": {"enabled": False}})


def test_chart_metadata_and_lint() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    (nats,) = [d for d in meta["dependencies"] if d["name"] == "nats"]
    assert nats["repository"] == "https://nats-io.github.io/k8s/helm/charts/" and nats["condition"] == "nats.enabled"
    assert not (CHART / "charts").exists(), "the nats chart is a dependency, not vendored"
    result = helm.lint(str(CHART), SECURED_VALUES)
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


# --- secure by default (issue #15) --------------------------------------------------------------------

SEC = "/etc/vgw/security"
NODE_IDS = {"shim": "shim-$(VGW_NODE_ID)", "routectl": "routectl-$(VGW_NODE_ID)"}


def env_of(c: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def vgw_containers(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (container, pod spec) of every VGW process that talks to NATS (all but the forwarder)."""
    out = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            for name, c in containers(doc).items():
                if name != "fwd":
                    out[name] = (c, doc["spec"]["template"]["spec"])
    return out


def test_the_default_render_fails_without_the_security_secret() -> None:
    with pytest.raises(helm.HelmError, match=r"security\.existingSecret is required"):
        render_chart({})
    # a secret alone does not make an external NATS without TLS acceptable
    with pytest.raises(helm.HelmError, match="need TLS"):
        render_chart({**SECURED_VALUES, "nats": {"enabled": False}, "natsUrl": "nats://nats-1:4222"})
    # the switch alone is not enough: NATS would still want TLS the VGW processes no longer present
    with pytest.raises(helm.HelmError, match=r"values-insecure\.yaml"):
        render_chart({"security": {"insecure": True}})


@pytest.mark.parametrize(
    ("nats", "expected"),
    [
        ({"config": {"nats": {"tls": {"enabled": False}}}}, "TLS and verified client certificates"),
        ({"config": {"nats": {"tls": {"merge": {"verify": False}}}}}, "TLS and verified client certificates"),
        ({"tlsCA": {"enabled": False}}, "TLS and verified client certificates"),
        ({"config": {"merge": {"00$include": None}}}, "authorization.conf"),
    ],
)
def test_nats_without_tls_verify_or_authorization_does_not_render(nats: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmError, match=expected):
        render_chart({**SECURED_VALUES, "nats": nats})


def test_nats_values_run_tls_with_verified_clients_and_the_permission_matrix() -> None:
    """The nats dependency is not rendered here (not vendored): its values are what configure it
    (nats chart: config.nats.tls, tlsCA, `$include` relative to /etc/nats-config)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["security"] == {"insecure": False, "existingSecret": "", "nodesSecret": ""}
    nats = values["nats"]
    tls = nats["config"]["nats"]["tls"]
    assert tls["enabled"] is True and tls["merge"]["verify"] is True and tls["secretName"]
    assert nats["tlsCA"] == {"enabled": True, "secretName": tls["secretName"], "key": "ca.crt"}
    include = nats["config"]["merge"]["00$include"]
    assert str(Path("/etc/nats-config", include).resolve()) == f"{tls['dir']}/authorization.conf"
    assert "authorization" not in nats["config"].get("merge", {})  # no inline users or tokens


def test_every_vgw_process_connects_to_nats_as_its_own_identity() -> None:
    for set_name in ("defaults", "everything", "external-nats"):
        values = VALUE_SETS[set_name]
        docs = render_chart(values)
        found = vgw_containers(docs)
        assert set(found) == {"config", "healthcheck", "monitor", "shim", "routectl"}
        control = values["security"]["existingSecret"]
        nodes = values["security"].get("nodesSecret") or f"{control}-nodes"
        for name, (c, pod) in found.items():
            e = env_of(c)
            ident = NODE_IDS.get(name, name)
            assert all(u.startswith("tls://") for u in str(e["VGW_NATS_URL"]).split(",")), name
            assert e["VGW_NATS_TLS_CA"] == f"{SEC}/ca.crt"
            for key, file in (("TLS_CERT", "tls.crt"), ("TLS_KEY", "tls.key"), ("NKEY_SEED", "nkey.seed")):
                assert e[f"VGW_NATS_{key}"] == f"{SEC}/{ident}.{file}", name
            assert e["VGW_NATS_INBOX_PREFIX"] == f"_INBOX_{ident}", name
            assert "VGW_NATS_INSECURE" not in e and "VGW_CONFIG_INSECURE" not in e, name
            if name in NODE_IDS:  # Kubernetes expands $(VGW_NODE_ID) only from an earlier variable
                assert c["env"][0]["name"] == "VGW_NODE_ID", name
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            assert mounts["security"]["mountPath"] == SEC and mounts["security"]["readOnly"] is True, name
            vol = {v["name"]: v for v in pod["volumes"]}["security"]["secret"]
            if name in NODE_IDS:
                # each node's pod needs its own identity, known only at run time: the nodes' Secret
                assert vol["secretName"] == nodes and "items" not in vol
            else:
                # a control-plane pod gets its own identity and nothing of any other
                assert vol["secretName"] == control
                keys = {i["key"] for i in vol["items"]}
                api = {"config-api.crt", "config-api.key", "tokens.json"} if name == "config" else set()
                assert keys == {"ca.crt", f"{name}.tls.crt", f"{name}.tls.key", f"{name}.nkey.seed"} | api
            assert vol["defaultMode"] == 0o440


def test_the_config_api_service_needs_tls_and_a_client_certificate_or_token() -> None:
    docs = by_kind(render_chart())
    e = env_of(containers(docs[("Deployment", "vgw-config")])["config"])
    host = str(e["VGW_CONFIG_ADDR"]).rpartition(":")[0]
    assert host not in ("127.0.0.1", "::1", "[::1]", "localhost")  # the Service reaches it, so:
    assert e["VGW_CONFIG_TLS_CERT"] == f"{SEC}/config-api.crt" and e["VGW_CONFIG_TLS_KEY"] == f"{SEC}/config-api.key"
    assert e["VGW_CONFIG_TLS_CLIENT_CA"] == f"{SEC}/ca.crt"
    assert e["VGW_CONFIG_TOKENS_FILE"] == f"{SEC}/tokens.json"
    svc = docs[("Service", "vgw-config")]
    assert svc["spec"]["type"] == "ClusterIP"  # never exposed outside the cluster by the chart


def test_insecure_renders_only_when_asked_and_every_process_is_told() -> None:
    assert INSECURE_VALUES["security"]["insecure"] is True
    assert "INSECURE" in (CHART / "values-insecure.yaml").read_text().splitlines()[0]
    docs = render_chart(INSECURE_VALUES)
    for name, (c, pod) in vgw_containers(docs).items():
        e = env_of(c)
        assert e["VGW_NATS_INSECURE"] == "true" and str(e["VGW_NATS_URL"]).startswith("nats://"), name
        assert not any(k.startswith(("VGW_NATS_TLS", "VGW_NATS_NKEY")) for k in e), name
        assert "security" not in {v["name"] for v in pod["volumes"]}, name
    e = env_of(containers(by_kind(docs)[("Deployment", "vgw-config")])["config"])
    assert e["VGW_CONFIG_INSECURE"] == "true"
    with helm.Chart.load(str(CHART)) as chart:
        notes = next(v for k, v in chart.render(INSECURE_VALUES, name="vgw", namespace="vgw").items() if "NOTES" in k)
    assert "INSECURE" in notes


def test_the_secrets_script_gives_every_file_the_chart_mounts(tmp_path: Path) -> None:
    """deploy/helm/vgw-secrets.sh on a real `vgwctl security init` output (kubectl replaced by a
    recorder): every key the chart reads is in the Secret it reads it from, and nothing more reaches
    the cluster than the workloads need."""
    init_dir = security_init_dir()
    sec = tmp_path / "security"
    init_dir(sec, nodes=["node-a", "node-b"])
    log = tmp_path / "kubectl.log"
    fake = tmp_path / "kubectl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\necho END >> {log}\n')
    fake.chmod(0o755)
    r = subprocess.run(
        ["bash", str(SECRETS_SCRIPT), str(sec), "-n", "vgw"],
        env={**os.environ, "KUBECTL": str(fake)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    secrets: dict[str, dict[str, Path]] = {}
    for call in log.read_text().split("END\n")[:-1]:
        args = call.splitlines()
        assert args[:3] == ["create", "secret", "generic"] and args[-2:] == ["-n", "vgw"]
        files = [a.removeprefix("--from-file=").split("=", 1) for a in args if a.startswith("--from-file=")]
        secrets[args[3]] = {k: Path(v) for k, v in files}
    assert set(secrets) == {"vgw-security", "vgw-security-nodes", "vgw-nats-server"}
    for keys in secrets.values():
        for key, path in keys.items():
            assert path.is_file(), (key, path)
            assert re.fullmatch(r"[-._a-zA-Z0-9]+", key), key  # a valid Secret key
    # nothing of the CA's key, the human identities or another node's role in the wrong place
    every = [str(p) for keys in secrets.values() for p in keys.values()]
    assert not any(p.endswith("ca.key") for p in every)
    assert not any(f"/identities/{i}/" in p for p in every for i in ("operator", "admin", "subscriber"))
    assert not any("routectl-" in k or "shim-" in k for k in secrets["vgw-security"])
    assert not any(k.startswith(("config.", "healthcheck.", "monitor.")) for k in secrets["vgw-security-nodes"])

    docs = render_chart()
    for name, (c, pod) in vgw_containers(docs).items():
        vol = {v["name"]: v for v in pod["volumes"]}["security"]["secret"]
        keys = secrets[vol["secretName"]]
        for i in vol.get("items", []):
            assert i["key"] in keys, (name, i["key"])
        for node in ("node-a", "node-b"):
            for var, path in env_of(c).items():
                if path and path.startswith(f"{SEC}/"):
                    key = path.removeprefix(f"{SEC}/").replace("$(VGW_NODE_ID)", node)
                    assert key in keys, (name, var, key)
        # the files behind the keys are the identity's own
        ident = NODE_IDS.get(name, name).replace("$(VGW_NODE_ID)", "node-a")
        assert keys[f"{ident}.nkey.seed"] == sec / "identities" / ident / "nkey.seed"
    nats = secrets["vgw-nats-server"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["nats"]
    assert values["config"]["nats"]["tls"]["secretName"] == "vgw-nats-server"
    assert {"tls.crt", "tls.key", "ca.crt", "authorization.conf"} == set(nats)
    assert nats["authorization.conf"] == sec / "nats/authorization.conf" and nats["tls.key"] == sec / "nats/server.key"


# --- node bootstrap, shutdown order, replicated NATS (issue #17) -------------------------------------


def node_pod() -> dict[str, Any]:
    return dict(by_kind(render_chart())[("DaemonSet", "vgw-node")]["spec"]["template"]["spec"])


def test_an_init_container_renders_the_forwarder_settings_for_the_pods_node() -> None:
    pod = node_pod()
    (init,) = pod["initContainers"]
    cmd = init["command"]
    assert cmd[:2] == ["vgw-fwd-config", "--from-nats"]
    out = cmd[cmd.index("--output") + 1]
    fwd = containers({"spec": {"template": {"spec": pod}}})["fwd"]
    fwd_args = fwd["command"][fwd["command"].index("--") + 1 :]
    assert fwd_args[fwd_args.index("--config") + 1] == out  # the forwarder reads what the init wrote
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in (init, fwd)}
    conf_dir = str(Path(out).parent)
    assert mounts["fwd-config"]["fwd-conf"]["mountPath"] == conf_dir
    assert mounts["fwd"]["fwd-conf"]["mountPath"] == conf_dir and mounts["fwd"]["fwd-conf"]["readOnly"] is True
    assert {v["name"]: v for v in pod["volumes"]}["fwd-conf"]["emptyDir"]["medium"] == "Memory"
    # the node is the Kubernetes node; the store is read as that node's shim identity
    e = env_of(init)
    assert init["env"][0] == {"name": "VGW_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    assert e["VGW_NATS_NKEY_SEED"] == f"{SEC}/shim-$(VGW_NODE_ID).nkey.seed"
    assert e["VGW_NATS_INBOX_PREFIX"] == "_INBOX_shim-$(VGW_NODE_ID)"
    assert init["securityContext"]["runAsNonRoot"] is True and init["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    # the forwarder's flags no longer carry a one-for-all address or port: only the settings file
    assert not {"--ext", "--int", "--single-arm", "--route"} & set(fwd_args)


def test_per_node_devices_reach_the_init_container() -> None:
    devices = {"worker-1": {"ext": "0000:3b:00.0", "int": "0000:3b:00.1"}, "worker-2": {"ext": "0000:af:00.0"}}
    docs = by_kind(render_chart({**SECURED_VALUES, "node": {"devices": devices}}))
    cm = docs[("ConfigMap", "vgw-node-devices")]
    assert yaml.safe_load(cm["data"]["devices.yaml"]) == devices
    pod = docs[("DaemonSet", "vgw-node")]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    path = init["command"][init["command"].index("--devices") + 1]
    mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["devices"]
    assert path == f"{mount}/devices.yaml"
    assert {v["name"]: v for v in pod["volumes"]}["devices"]["configMap"]["name"] == "vgw-node-devices"


def test_the_connection_sync_key_reaches_the_forwarder_owner_only() -> None:
    values = {**SECURED_VALUES, "node": {"forwarder": {"connSyncKeySecret": "vgw-conn-sync"}}}
    pod = by_kind(render_chart(values))[("DaemonSet", "vgw-node")]["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in pod["initContainers"]}
    key = inits["fwd-config"]["command"][inits["fwd-config"]["command"].index("--sync-key-file") + 1]
    cmd = inits["conn-sync-key"]["command"]
    assert cmd[:3] == ["install", "-m", "0600"] and cmd[-1] == key
    assert inits["conn-sync-key"]["securityContext"]["runAsUser"] == 0  # the forwarder's user owns it
    vol = {v["name"]: v for v in pod["volumes"]}["conn-sync"]["secret"]
    assert vol["secretName"] == "vgw-conn-sync" and vol["items"] == [{"key": "conn-sync.key", "path": "conn-sync.key"}]
    assert "conn-sync-key" not in {c["name"] for c in node_pod()["initContainers"]}


def test_the_forwarder_stops_only_after_route_control_has_withdrawn() -> None:
    pod = node_pod()
    c = containers({"spec": {"template": {"spec": pod}}})
    hook = c["fwd"]["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:3] == ["python", "-m", "dataplane.shim.fwdprestop"]
    # it watches route control's own endpoint on this node (host network)
    port = {p["name"]: p["containerPort"] for p in c["routectl"]["ports"]}["metrics-rc"]
    assert hook[hook.index("--url") + 1] == f"http://127.0.0.1:{port}/healthz"
    assert float(hook[hook.index("--timeout") + 1]) < pod["terminationGracePeriodSeconds"]
    assert "lifecycle" not in c["routectl"]  # route control gets SIGTERM at once, and withdraws
    with pytest.raises(helm.HelmError, match="preStopWaitSeconds must be below"):
        render_chart({**SECURED_VALUES, "node": {"terminationGracePeriodSeconds": 20}})


def test_nats_runs_as_a_three_server_cluster_and_every_process_replicates_on_it() -> None:
    nats = yaml.safe_load((CHART / "values.yaml").read_text())["nats"]
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert nats["config"]["jetstream"]["enabled"] is True
    docs = render_chart()
    for name, (c, _pod) in vgw_containers(docs).items():
        assert env_of(c)["VGW_JS_REPLICAS"] == "3", name
    (init,) = node_pod()["initContainers"]
    assert env_of(init)["VGW_JS_REPLICAS"] == "3"
    # routes: only the NATS pods of the release may reach the route port
    pol = by_kind(docs)[("NetworkPolicy", "vgw-nats-routes")]["spec"]
    route_rule = next(r for r in pol["ingress"] if r.get("from"))
    assert route_rule["ports"] == [{"port": 6222, "protocol": "TCP"}]
    assert route_rule["from"][0]["podSelector"] == pol["podSelector"]
    # a NATS that is not the chart's: the operator sets the replicas (extraEnv), nothing is guessed
    for name, (c, _pod) in vgw_containers(render_chart(VALUE_SETS["external-nats"])).items():
        assert "VGW_JS_REPLICAS" not in env_of(c), name
