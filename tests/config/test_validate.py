"""Validation: every bad document is rejected with the right path and reason, all errors at once."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.config.bad_documents import BAD, Bad, example
from vgw.config.validate import ConfigInvalid, load_document


def test_example_is_valid() -> None:
    doc = load_document(yaml.safe_dump(example()))
    assert len(doc.vips) == 2


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_document(bad: Bad) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_document(bad.text())
    issues = info.value.issues
    assert any(i.path == bad.path and bad.reason in i.reason for i in issues) or (
        bad.path == "" and any(bad.reason in i.reason for i in issues)
    ), [str(i) for i in issues]


def test_an_ipv6_peer_with_an_ipv6_source_is_valid_beside_ipv4_peers() -> None:
    doc = example()
    peers = doc["nodes"][0]["bgp"]["peers"]
    peers.append({**peers[0], "address": "2001:db8::1", "local_address": "2001:db8::5"})
    node = load_document(yaml.safe_dump(doc)).nodes[0]
    assert node.bgp is not None and [str(p.address) for p in node.bgp.peers][-1] == "2001:db8::1"


def test_all_errors_at_once() -> None:
    doc = example()
    doc["vips"][0]["services"][0]["port"] = 0
    doc["vips"][1]["services"][0]["backends"][0]["weight"] = -1
    doc["health_checks"][0]["rise"] = 0
    with pytest.raises(ConfigInvalid) as info:
        load_document(yaml.safe_dump(doc))
    paths = {i.path for i in info.value.issues}
    assert {"vips[0].services[0].port", "vips[1].services[0].backends[0].weight", "health_checks[0].rise"} <= paths

    doc = example()
    doc["vips"][0]["services"][0]["health_check"] = "nope"
    doc["nodes"][0]["cluster"] = "mars"
    doc["vips"][1]["services"][0]["forwarding"] = "tun"
    with pytest.raises(ConfigInvalid) as info:
        load_document(yaml.safe_dump(doc))
    paths = {i.path for i in info.value.issues}
    assert {"vips[0].services[0].health_check", "nodes[0].cluster", "vips[1].services[0].forwarding"} <= paths


def test_json_and_yaml_give_the_same_document() -> None:
    import json

    doc = example()
    assert load_document(json.dumps(doc)) == load_document(yaml.safe_dump(copy.deepcopy(doc)))
