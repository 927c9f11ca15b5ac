"""Flood protection in the configuration: the ``protection`` block on VIPs and services (model,
ranges, field-by-field inheritance, TCP-only rules with precise paths) and the capacity warnings
(``expected_connections`` against a node's LIPs x backends x source ports, and against its
connection tables), which the config service returns without refusing the document."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.config.bad_documents import example
from tests.config.conftest import REPO, ConfigService, vgwctl_env
from vgw.config import (
    AUTO_HALF_OPEN_DEFAULT,
    AUTO_SYN_RATE_DEFAULT,
    ConfigDocument,
    EffectiveProtection,
    Limits,
    Protection,
    service_protection,
)
from vgw.config.client import ConfigClient
from vgw.config.validate import ConfigInvalid, Issue, document_warnings, load_document

TCP_DEFAULT = EffectiveProtection("auto", AUTO_HALF_OPEN_DEFAULT, AUTO_SYN_RATE_DEFAULT, 0, 0, False)
UDP_DEFAULT = EffectiveProtection("off", AUTO_HALF_OPEN_DEFAULT, AUTO_SYN_RATE_DEFAULT, 0, 0, False)

# Paths in the example: vips[0] is www (www-http tcp, www-dns udp), vips[1] is api (api-tcp).
WWW, HTTP, DNS, API = "vips[0]", "vips[0].services[0]", "vips[0].services[1]", "vips[1].services[0]"


def bare() -> dict[str, Any]:
    """The example without any protection or expected_connections."""
    raw = example()
    for v in raw["vips"]:
        v.pop("protection", None)
        for s in v["services"]:
            s.pop("protection", None)
            s.pop("expected_connections", None)
    return raw


def effective(raw: dict[str, Any]) -> dict[str, EffectiveProtection]:
    doc = load_document(json.dumps(raw))
    return {s.name: service_protection(v, s) for v, s in doc.services()}


def issues_of(raw: dict[str, Any]) -> list[Issue]:
    with pytest.raises(ConfigInvalid) as info:
        load_document(json.dumps(raw))
    return info.value.issues


def at(raw: dict[str, Any], path: str) -> dict[str, Any]:
    obj: Any = raw
    for part in path.replace("[", ".[").split("."):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    assert isinstance(obj, dict)
    return obj


# --- defaults and inheritance ------------------------------------------------------------------------


def test_secure_by_default() -> None:
    """Without any protection block: TCP services run the SYN proxy in auto mode with the default
    thresholds, no caps, no RSTs; UDP services have nothing but (unset) caps."""
    got = effective(bare())
    assert got == {"www-http": TCP_DEFAULT, "www-dns": UDP_DEFAULT, "echo-tcp": TCP_DEFAULT, "api-tcp": TCP_DEFAULT}
    assert (AUTO_HALF_OPEN_DEFAULT, AUTO_SYN_RATE_DEFAULT, Limits.MAX_RATE) == (10_000, 100_000, 100_000_000)


def test_the_example_document() -> None:
    got = effective(example())
    assert got["www-http"] == TCP_DEFAULT  # the VIP spells out the defaults
    assert got["www-dns"] == EffectiveProtection("off", 10_000, 100_000, 0, 5000, False)
    assert got["echo-tcp"] == TCP_DEFAULT  # no block of its own: the VIP's
    assert got["api-tcp"] == EffectiveProtection("on", 10_000, 100_000, 0, 0, True)


def test_a_service_overrides_its_vip_field_by_field() -> None:
    raw = bare()
    at(raw, WWW)["protection"] = {
        "syn_proxy": "on",
        "auto_half_open": 500,
        "conn_rate": 1000,
        "conn_rate_per_source_24": 50,
        "rst_unknown": True,
    }
    at(raw, HTTP)["protection"] = {"syn_proxy": "auto", "auto_syn_rate": 7, "conn_rate": 0, "rst_unknown": False}
    got = effective(raw)
    # www-http: its own syn_proxy, auto_syn_rate, conn_rate (0 lifts the VIP's cap) and rst_unknown;
    # the VIP's auto_half_open and per-/24 cap.
    assert got["www-http"] == EffectiveProtection("auto", 500, 7, 0, 50, False)
    # www-dns (UDP): the VIP's caps only; its SYN-proxy settings and rst_unknown do not reach UDP.
    assert got["www-dns"] == EffectiveProtection("off", 10_000, 100_000, 1000, 50, False)
    # api-tcp: another VIP, untouched.
    assert got["api-tcp"] == TCP_DEFAULT


def test_null_fields_inherit_and_an_empty_block_changes_nothing() -> None:
    raw = bare()
    at(raw, WWW)["protection"] = {"syn_proxy": "off", "conn_rate": 9}
    at(raw, HTTP)["protection"] = {"syn_proxy": None, "conn_rate": None}
    at(raw, API)["protection"] = {}
    got = effective(raw)
    assert got["www-http"] == EffectiveProtection("off", 10_000, 100_000, 9, 0, False)
    assert got["api-tcp"] == TCP_DEFAULT


@pytest.mark.parametrize(("text", "mode"), [("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")])
def test_bare_yaml_on_and_off_are_modes(text: str, mode: str) -> None:
    """YAML 1.1 reads a bare on/off as a boolean; the mode takes them as "on"/"off"."""
    p = Protection.model_validate(yaml.safe_load(f"syn_proxy: {text}"))
    assert p.syn_proxy == mode


def test_inheritance_survives_the_stores_and_the_apis_dumps() -> None:
    """A service that sets a default value explicitly (syn_proxy auto under a VIP with off) keeps it
    through the JSON the store keeps and the YAML Get returns (defaults left out)."""
    raw = bare()
    at(raw, WWW)["protection"] = {"syn_proxy": "off", "rst_unknown": True}
    at(raw, HTTP)["protection"] = {"syn_proxy": "auto", "rst_unknown": False, "conn_rate": 0}
    doc = load_document(json.dumps(raw))
    want = {s.name: service_protection(v, s) for v, s in doc.services()}
    assert want["www-http"] == TCP_DEFAULT and want["api-tcp"] == TCP_DEFAULT
    for dumped in (
        doc.model_dump_json(),
        yaml.safe_dump(doc.model_dump(mode="json", exclude_defaults=True)),  # what Get renders
    ):
        again = load_document(dumped)
        assert again == doc
        assert {s.name: service_protection(v, s) for v, s in again.services()} == want


# --- structure and rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "block", "path", "reason"),
    [
        (WWW, {"syn_proxy": "maybe"}, "protection.syn_proxy", "Input should be 'off', 'on' or 'auto'"),
        (WWW, {"syn_proxy": 1}, "protection.syn_proxy", "Input should be 'off', 'on' or 'auto'"),
        (WWW, {"auto_half_open": 0}, "protection.auto_half_open", "greater than or equal to 1"),
        (HTTP, {"auto_syn_rate": 100_000_001}, "protection.auto_syn_rate", "less than or equal to 100000000"),
        (HTTP, {"conn_rate": -1}, "protection.conn_rate", "greater than or equal to 0"),
        (API, {"conn_rate_per_source_24": 100_000_001}, "protection.conn_rate_per_source_24", "less than or equal"),
        (API, {"conn_rate": "1000"}, "protection.conn_rate", "Input should be a valid integer"),
        (API, {"rst_unknown": "yes"}, "protection.rst_unknown", "Input should be a valid boolean"),
        (WWW, {"syn_cookies": True}, "protection.syn_cookies", "unknown field"),
        (HTTP, {"expected_connections": 1}, "protection.expected_connections", "unknown field"),
    ],
)
def test_bad_values_name_their_path(where: str, block: dict[str, Any], path: str, reason: str) -> None:
    raw = bare()
    at(raw, where)["protection"] = block
    issues = issues_of(raw)
    assert [i.path for i in issues] == [f"{where}.{path}"], issues
    assert reason in issues[0].reason, issues


@pytest.mark.parametrize("value", [0, -5, Limits.EXPECTED_CONNECTIONS_MAX + 1, "many", 1.5])
def test_bad_expected_connections(value: object) -> None:
    raw = bare()
    at(raw, HTTP)["expected_connections"] = value
    assert [i.path for i in issues_of(raw)] == [f"{HTTP}.expected_connections"]


def test_tcp_settings_on_a_udp_service_are_errors_each_with_its_path() -> None:
    raw = bare()
    at(raw, DNS)["protection"] = {
        "syn_proxy": "auto",
        "auto_half_open": 10_000,  # even at its default value: a TCP setting
        "auto_syn_rate": 5,
        "conn_rate": 100,  # caps are fine on UDP
        "rst_unknown": True,
    }
    at(raw, API)["protection"] = {"syn_proxy": "on"}  # fine: TCP
    issues = issues_of(raw)
    assert [(i.path, i.reason) for i in issues] == [
        (f"{DNS}.protection.syn_proxy", "syn_proxy auto applies to TCP services only (use off)"),
        (f"{DNS}.protection.auto_half_open", "auto_half_open is a SYN proxy threshold, for TCP services only"),
        (f"{DNS}.protection.auto_syn_rate", "auto_syn_rate is a SYN proxy threshold, for TCP services only"),
        (f"{DNS}.protection.rst_unknown", "rst_unknown answers TCP segments, for TCP services only"),
    ]


def test_off_and_false_are_fine_on_udp_and_a_vips_tcp_settings_do_not_apply_to_udp() -> None:
    raw = bare()
    at(raw, DNS)["protection"] = {"syn_proxy": "off", "rst_unknown": False, "conn_rate_per_source_24": 3}
    at(raw, WWW)["protection"] = {"syn_proxy": "on", "auto_half_open": 5, "rst_unknown": True}
    got = effective(raw)
    assert got["www-dns"] == EffectiveProtection("off", 10_000, 100_000, 0, 3, False)
    assert got["www-http"] == EffectiveProtection("on", 5, 100_000, 0, 0, True)


# --- warnings: what LIPs x backends (and the tables) can hold -------------------------------------


def warnings_for(raw: dict[str, Any]) -> list[Issue]:
    doc = load_document(json.dumps(raw))  # valid: warnings never make it invalid
    return document_warnings(doc)


def test_the_example_has_no_warnings() -> None:
    assert document_warnings(ConfigDocument.model_validate(example())) == []


def test_lip_capacity_exactly_met_is_quiet_one_more_warns() -> None:
    """node-a and node-b each have 2 LIPs; www-http has 3 backends: 2 x 3 x 64512 = 387072."""
    raw = bare()
    for n in raw["nodes"]:
        n["forwarder"] = {"workers": 2}  # tables of 2 x 262144: room for what the LIPs hold
    assert Limits.LIP_PORTS == 64512
    at(raw, HTTP)["expected_connections"] = 387072
    assert warnings_for(raw) == []
    at(raw, HTTP)["expected_connections"] = 387073
    (w,) = warnings_for(raw)
    assert w.path == f"{HTTP}.expected_connections"
    assert w.reason == (
        "service www-http expects 387073 connections per node, but nodes node-a, node-b can hold at most 387072 "
        "(2 LIPs x 3 backends x 64512 source ports on node node-a): add LIPs to the node's lip_pool, or backends"
    )


def test_only_backends_that_take_new_connections_count() -> None:
    """Disabled, draining and weight-0 backends take no new connections; IPv6 ones are not the
    forwarder's. api-tcp has two backends; one left: 2 LIPs x 1 x 64512 = 129024."""
    for change in ({"state": "disabled"}, {"state": "draining"}, {"weight": 0}):
        raw = bare()
        at(raw, API).update(expected_connections=129025)
        raw["vips"][1]["services"][0]["backends"][1].update(change)
        (w,) = warnings_for(raw)
        assert "can hold at most 129024 (2 LIPs x 1 backends x 64512" in w.reason, (change, w)
        at(raw, API)["expected_connections"] = 129024
        assert warnings_for(raw) == []


def test_the_node_with_the_fewest_lips_is_named_and_a_node_without_lips_holds_nothing() -> None:
    raw = bare()
    raw["nodes"][1]["lip_pool"] = ["198.51.100.105"]  # node-b: 1 LIP
    at(raw, HTTP)["expected_connections"] = 200_000  # node-a holds 387072, node-b 193536
    (w,) = warnings_for(raw)
    assert "but node node-b can hold at most 193536 (1 LIPs x 3 backends x 64512 source ports on node node-b)" in (
        w.reason
    )
    at(raw, HTTP)["backends"] = []
    (w,) = warnings_for(raw)
    assert "nodes node-a, node-b can hold at most 0 (2 LIPs x 0 backends" in w.reason


def test_connection_tables_too_small_for_what_the_services_expect() -> None:
    """node-a's table: 1 worker x 262144 by default. www-http 200000 + api-tcp 100000 > 262144."""
    raw = bare()
    at(raw, HTTP)["expected_connections"] = 200_000
    at(raw, API)["expected_connections"] = 62_144
    assert warnings_for(raw) == []
    at(raw, API)["expected_connections"] = 62_145
    warnings = warnings_for(raw)
    assert [w.path for w in warnings] == ["nodes[0].forwarder.conn_capacity", "nodes[1].forwarder.conn_capacity"]
    assert warnings[0].reason == (
        "the services node node-a serves expect 262145 connections together, but its connection tables hold "
        "262144 (1 workers x 262144): raise conn_capacity or workers (within the memory budget)"
    )
    raw["nodes"][0]["forwarder"] = {"workers": 2}
    assert [w.path for w in warnings_for(raw)] == ["nodes[1].forwarder.conn_capacity"]


def test_many_warnings_are_summarised() -> None:
    raw = bare()
    vip = raw["vips"][1]
    vip["services"] = [
        {"name": f"s{i}", "port": 1000 + i, "expected_connections": 10**6, "backends": []} for i in range(150)
    ]
    warnings = warnings_for(raw)  # 150 services' LIP capacity, 2 nodes' tables
    assert len(warnings) == 101
    assert warnings[-1] == Issue("", "... and 52 more warnings")


# --- warnings reach the user without refusing the document --------------------------------------------


def warned_example() -> dict[str, Any]:
    raw = copy.deepcopy(example())
    at(raw, HTTP)["expected_connections"] = 1_000_000
    return raw


async def test_apply_commits_and_returns_warnings(client: ConfigClient) -> None:
    text = yaml.safe_dump(warned_example()).encode()
    r, warnings = await client.apply_with_warnings(text, dry_run=True)
    assert r.dry_run and not r.committed
    assert len(warnings) == 3  # the service's LIP capacity; node-a's and node-b's tables
    assert warnings[0].startswith(f"{HTTP}.expected_connections: service www-http expects 1000000 connections")
    assert warnings[1].startswith("nodes[0].forwarder.conn_capacity: the services node node-a serves expect 1000000")
    r, warnings2 = await client.apply_with_warnings(text, reason="warned", expected_revision=0)
    assert (r.revision, r.committed) == (1, True)
    assert warnings2 == warnings
    # A document without warnings has none; plain apply() still returns the response only.
    r2, none = await client.apply_with_warnings(yaml.safe_dump(example()).encode())
    assert (r2.revision, none) == (2, [])
    # Protection is stored and read back (Get leaves defaults out) as applied ...
    got = load_document((await client.get()).document)
    assert effective(got.model_dump(mode="json")) == effective(example())
    # ... and a change of it is a field-level change of the service (and of the VIP).
    changed = example()
    at(changed, API)["protection"]["syn_proxy"] = "off"
    at(changed, WWW)["protection"]["auto_half_open"] = 20000
    r3 = await client.apply(yaml.safe_dump(changed).encode(), dry_run=True)
    fields = {(c.path, f.field, f.old_json, f.new_json) for c in r3.changes for f in c.fields}
    assert ("services/api-tcp", "protection.syn_proxy", '"on"', '"off"') in fields, r3.changes
    assert any(f[1] == "protection.auto_half_open" and f[3] == "20000" for f in fields), r3.changes


def test_vgwctl_apply_prints_warnings_and_succeeds(
    config_service: ConfigService, config_env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "warned.yaml"
    doc.write_text(yaml.safe_dump(warned_example()))
    env = vgwctl_env(config_env, config_service)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vgw.cli.main", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
        )

    r = ctl("apply", "--dry-run", "-f", str(doc))
    assert r.returncode == 0, r.stderr
    assert "dry run: would change" in r.stdout
    assert f"vgwctl: warning: {HTTP}.expected_connections: service www-http expects 1000000" in r.stderr
    r = ctl("apply", "-f", str(doc), "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["committed"] is True and out["revision"] == "1"
    assert [w.split(":")[0] for w in out["warnings"]] == [
        f"{HTTP}.expected_connections",
        "nodes[0].forwarder.conn_capacity",
        "nodes[1].forwarder.conn_capacity",
    ]
