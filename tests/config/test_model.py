"""The shared configuration model: the example document, round trips, node views, health keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from vgw.config import ConfigDocument, health_key, health_targets, node_view

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config-example.yaml"


@pytest.fixture
def doc() -> ConfigDocument:
    return ConfigDocument.model_validate(yaml.safe_load(EXAMPLE.read_text()))


def test_example_round_trips_through_json(doc: ConfigDocument) -> None:
    again = ConfigDocument.model_validate_json(doc.model_dump_json())
    assert again == doc
    assert doc.vips[0].services[0].backends[0].key == "198.51.100.21:8080"
    assert doc.health_check("web-http") is not None


def test_node_view(doc: ConfigDocument) -> None:
    view = node_view(doc, "node-b")
    assert view is not None
    assert [str(ip) for ip in view.lips] == ["198.51.100.105", "198.51.100.106"]
    assert [s.service.name for s in view.services] == ["www-http", "www-dns", "echo-tcp", "api-tcp"]
    assert {r for _, r in view.vips} == {"primary"}
    first = view.services[0]
    assert first.backend_health_key(first.service.backends[0]) == "198-51-100-21_8080.web-http"
    assert node_view(doc, "nope") is None


def test_standby_cluster_nodes_get_the_vip_as_standby(doc: ConfigDocument) -> None:
    raw = doc.model_dump(mode="json")
    raw["clusters"][0]["standby"] = "dr"
    raw["clusters"].append({"name": "dr"})
    dr = dict(raw["nodes"][1], id="node-dr", cluster="dr", lip_pool=["198.51.100.120"])
    raw["nodes"].append(dr)
    d = ConfigDocument.model_validate(raw)
    view = node_view(d, "node-dr")
    assert view is not None
    assert {r for _, r in view.vips} == {"standby"}
    assert d.vip_nodes(d.vips[0]) == (["node-a", "node-b"], ["node-dr"])


def test_health_targets_share_one_probe_per_backend_and_check(doc: ConfigDocument) -> None:
    raw = doc.model_dump(mode="json")
    # A second service using the same check and backends shares the probe streams.
    svc = dict(raw["vips"][0]["services"][0], name="www-http-2", port=8080)
    raw["vips"][0]["services"].append(svc)
    d = ConfigDocument.model_validate(raw)
    targets = health_targets(d)
    t = targets[health_key("198.51.100.21", 8080, "web-http")]
    assert sorted(u.service for u in t.users) == ["www-http", "www-http-2"]
    assert targets[health_key("198.51.100.21", 53, "dns-udp")].port == 53


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"port": "80"}, "port"),
        ({"port": 0}, "port"),
        ({"weight": True}, "weight"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_strict_types(doc: ConfigDocument, patch: dict[str, object], where: str) -> None:
    raw = doc.model_dump(mode="json")
    raw["vips"][0]["services"][0]["backends"][0].update(patch)
    with pytest.raises(ValidationError) as info:
        ConfigDocument.model_validate(raw)
    assert where in str(info.value)


def test_full_dump_is_a_valid_document(doc: ConfigDocument) -> None:
    """`vgwctl get -o yaml` output (every default written out) applies again unchanged."""
    import json

    from vgw.config.validate import load_document

    assert load_document(json.dumps(doc.model_dump(mode="json"))) == doc
    assert load_document(yaml.safe_dump(doc.model_dump(mode="json", exclude_defaults=True))) == doc


def test_backend_fields_are_what_the_diff_compares() -> None:
    """vgw.config.diff compares backends by (address, port) and then weight and state only, for
    speed; a new Backend field must be added there too."""
    from vgw.config import Backend

    assert set(Backend.model_fields) == {"address", "port", "weight", "state"}
