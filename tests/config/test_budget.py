"""The forwarder memory budget: quantities in the model, the cost formula on hand-computed cases,
the selection shared with the shim, and validation at and over the budget.

Every expected figure below is worked out by hand from the specification (docs/config.md,
"Forwarder memory budget"), not by calling the code under test.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dataplane.shim.desired import desired_state
from tests.config.bad_documents import example
from tests.config.gen import generate
from vgw.config import ConfigDocument, ForwarderSettings, ServingNodes, node_view
from vgw.config.budget import (
    BASE,
    conn_table_bytes,
    maglev_table_bytes,
    node_cost,
    node_costs,
    pow2ceil,
    round4k,
    scheduler_table_bytes,
    service_bytes,
    worker_bytes,
    wrr_table_bytes,
)
from vgw.config.validate import ConfigInvalid, load_document

MiB = 1048576

# --- quantities -----------------------------------------------------------------------------------


def with_forwarder(fwd: dict[str, Any], node: int = 0) -> dict[str, Any]:
    doc = example()
    doc["nodes"][node]["forwarder"] = fwd
    return doc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512Mi", 536870912),
        ("2Gi", 2147483648),
        ("1G", 1000000000),
        ("800M", 800000000),
        ("1048576Ki", 1073741824),
        ("65536Ki", 67108864),  # the minimum, 64 MiB
        ("1Ti", 1099511627776),  # the maximum
        ("100000k", 100000000),
        ("1T", 1000000000000),
        ("268435456", 268435456),  # a plain number of bytes, as a string
        (536870912, 536870912),  # an integer: bytes
        (67108864, 67108864),
    ],
)
def test_memory_budget_quantities(value: object, expected: int) -> None:
    assert ForwarderSettings.model_validate({"memory_budget": value}).memory_budget == expected
    if expected >= 106322496:  # what the example's nodes need (test_example_node_by_hand)
        doc = load_document(json.dumps(with_forwarder({"memory_budget": value})))
        assert doc.nodes[0].forwarder.memory_budget == expected
        assert doc.nodes[1].forwarder.memory_budget == 536870912  # the default: 512 MiB


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("512MB", "'512MB' is not a byte quantity"),
        ("512mi", "is not a byte quantity"),
        ("512 Mi", "is not a byte quantity"),
        ("1e9", "is not a byte quantity"),
        ("-1Gi", "is not a byte quantity"),
        ("0x10000000", "is not a byte quantity"),
        ("", "is not a byte quantity"),
        ("512m", "is not a byte quantity"),  # Kubernetes' milli is not bytes
        ("1.5Gi", "write a whole number with a smaller unit"),
        (".5Ti", "write a whole number with a smaller unit"),
        (True, "expected a whole number of bytes"),
        (536870912.0, "expected a whole number of bytes"),
        (None, "expected a whole number of bytes or a quantity such as 512Mi, got NoneType"),
        (-1, "-1 is not a number of bytes"),
        ("63Mi", "66060288 bytes (63 MiB) is out of range: 64 MiB to 1 TiB"),
        (67108863, "is out of range: 64 MiB to 1 TiB"),
        ("1025Gi", "(1.0 TiB) is out of range"),
        ("2Ti", "2199023255552 bytes (2 TiB) is out of range"),
        ("1Pi", "is out of range"),
    ],
)
def test_bad_memory_budget(value: object, reason: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_document(json.dumps(with_forwarder({"memory_budget": value})))
    issues = info.value.issues
    assert [i.path for i in issues] == ["nodes[0].forwarder.memory_budget"], issues
    assert reason in issues[0].reason, issues[0].reason


@pytest.mark.parametrize(
    ("fwd", "path", "reason"),
    [
        ({"workers": 0}, "workers", "greater than or equal to 1"),
        ({"workers": 129}, "workers", "less than or equal to 128"),
        ({"workers": "2"}, "workers", "valid integer"),
        ({"conn_capacity": 1023}, "conn_capacity", "greater than or equal to 1024"),
        ({"conn_capacity": 268435457}, "conn_capacity", "less than or equal to 268435456"),
        ({"memory": "1Gi"}, "memory", "unknown field"),
    ],
)
def test_bad_forwarder_settings(fwd: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_document(json.dumps(with_forwarder(fwd, node=1)))
    assert any(i.path == f"nodes[1].forwarder.{path}" and reason in i.reason for i in info.value.issues), [
        str(i) for i in info.value.issues
    ]


def test_forwarder_defaults_and_round_trip() -> None:
    doc = load_document(yaml.safe_dump(example()))
    fwd = doc.nodes[0].forwarder
    assert (fwd.workers, fwd.conn_capacity, fwd.memory_budget) == (1, 262144, 536870912)
    # Get (defaults left out) omits an all-default section; a set budget comes back as bytes
    assert "forwarder" not in doc.model_dump(mode="json", exclude_defaults=True)["nodes"][0]
    raw = with_forwarder({"workers": 2, "memory_budget": "2Gi"})
    doc = load_document(yaml.safe_dump(raw))
    dumped = doc.model_dump(mode="json", exclude_defaults=True)["nodes"][0]["forwarder"]
    assert dumped == {"workers": 2, "memory_budget": 2147483648}
    again = doc.model_dump(mode="json")
    assert load_document(json.dumps(again)) == doc
    with pytest.raises(ValidationError):
        doc.nodes[0].forwarder.model_validate({"workers": 1.0})  # strict: no floats for integers


# --- the formula ----------------------------------------------------------------------------------


def test_helpers() -> None:
    assert [pow2ceil(x) for x in (1, 2, 3, 4, 5, 1023, 1024, 1025, 104858)] == [1, 2, 4, 4, 8, 1024, 1024, 2048, 131072]
    assert [round4k(x) for x in (0, 1, 4095, 4096, 4097, 131074)] == [0, 4096, 4096, 4096, 8192, 135168]


def test_connection_tables_by_hand() -> None:
    # C = 1024: 64*1024 + 64*pow2ceil(ceil(409.6) = 410 -> 512) + 4*1024 + 8*1024
    #         + 16*pow2ceil(max(1024, 2048) = 2048) = 65536 + 32768 + 4096 + 8192 + 32768
    assert conn_table_bytes(1024) == 143360
    # C = 3000: 192000 + 64*pow2ceil(1200 -> 2048) + 12000 + 24000 + 16*pow2ceil(6000 -> 8192)
    #         = 192000 + 131072 + 12000 + 24000 + 131072
    assert conn_table_bytes(3000) == 490144
    # C = 262144 (the default): 16777216 + 64*pow2ceil(ceil(104857.6) = 104858 -> 131072) + 1048576
    #         + 2097152 + 16*pow2ceil(524288) = 16777216 + 8388608 + 1048576 + 2097152 + 8388608
    assert conn_table_bytes(262144) == 36700160
    # C = 2^28 (the maximum): 2^34 + 64*pow2ceil(107374183 -> 2^27) + 2^30 + 2^31 + 16*2^29
    #         = 2^34 + 2^33 + 2^30 + 2^31 + 2^33
    assert conn_table_bytes(268435456) == 17179869184 + 8589934592 + 1073741824 + 2147483648 + 8589934592
    # plus WORKER_FIXED = 2228224 per worker
    assert worker_bytes(1024) == 143360 + 2228224 == 2371584
    assert worker_bytes(262144) == 36700160 + 2228224 == 38928384


def test_scheduler_tables_by_hand() -> None:
    assert maglev_table_bytes(7) == 4096  # 2*7 = 14 -> one page
    assert maglev_table_bytes(None) == maglev_table_bytes(65537) == 135168  # 131074 -> 33 pages
    assert maglev_table_bytes(1048573) == 2097152  # 2097146 -> 512 pages
    assert wrr_table_bytes([100, 100]) == 4096  # k 2, g 100, S 2: 2*(2+2) = 8
    assert wrr_table_bytes([100, 50, 0]) == 4096  # k 2, g 50, S 3: 2*(3+2) = 10
    assert wrr_table_bytes([2047, 1]) == 8192  # k 2, g 1, S 2048: 2*(2048+2) = 4100 -> 2 pages
    assert wrr_table_bytes([65535, 65534]) == 135168  # S 131069 -> min 65536: 2*(65536+2) = 131076 -> 33 pages
    assert wrr_table_bytes([0, 0]) == 0 and wrr_table_bytes([]) == 0  # k = 0
    assert wrr_table_bytes([7] * 3000) == 12288  # g 7, S 3000, k 3000: 2*6000 = 12000 -> 3 pages
    assert scheduler_table_bytes("wlc", None, [100, 100]) == 0
    assert scheduler_table_bytes("maglev", 7, [100]) == 4096
    assert scheduler_table_bytes("wrr", None, [2047, 1]) == 8192
    assert service_bytes(backends=3, lips=2, table=135168) == 2048 + 480 + 256 + 135168 == 137952


def test_example_node_by_hand() -> None:
    """docs/config-example.yaml, node-a: 1 worker x 262144 connections, LIPs .101 and .102 (l = 2),
    services www-http (maglev 65537, 3 backends), www-dns (wrr, 2 x weight 100), echo-tcp (wlc, 3),
    api-tcp (wlc, 2)."""
    doc = ConfigDocument.model_validate(example())
    www_http = 2048 + 160 * 3 + 128 * 2 + 135168  # 137952
    www_dns = 2048 + 160 * 2 + 128 * 2 + 4096  # 6720: k 2, g 100, S 2 -> round4k(8)
    echo_tcp = 2048 + 160 * 3 + 128 * 2 + 0  # 2784
    api_tcp = 2048 + 160 * 2 + 128 * 2 + 0  # 2624
    expected = 67108864 + (36700160 + 2228224) + (www_http + www_dns + echo_tcp + api_tcp) + 135168
    assert expected == 106322496
    cost = node_cost(doc, "node-a")
    assert cost is not None
    assert cost.total == 106322496
    assert (cost.base, cost.connection_tables, cost.services) == (BASE, 38928384, 4)
    assert (cost.scheduler_tables, cost.transient) == (135168 + 4096, 135168)
    assert cost.service_structures == 2 * (2048 + 480 + 256) + (2048 + 320 + 256) + (2048 + 320 + 256) == 10816
    assert node_costs(doc)["node-b"].total == 106322496  # .105, .106: the same shape
    assert node_cost(doc, "nope") is None


MIXED: dict[str, Any] = {
    "clusters": [{"name": "c1", "standby": "c2"}, {"name": "c2"}],
    "nodes": [
        {
            "id": "a",
            "cluster": "c1",
            "mode": "single_arm",
            "external": {"address": "192.0.2.1/24"},
            "lip_pool": ["198.18.0.1", "198.18.0.2", "198.18.0.3"],
            "forwarder": {"workers": 2, "conn_capacity": 1024, "memory_budget": "64Mi"},
        },
        {
            "id": "b",
            "cluster": "c1",
            "mode": "single_arm",
            "external": {"address": "192.0.2.2/24"},
            "lip_pool": ["2001:db8::1"],  # no IPv4 LIP: the forwarder takes no service
        },
        {
            "id": "s",
            "cluster": "c2",
            "mode": "single_arm",
            "external": {"address": "192.0.2.3/24"},
            "lip_pool": ["198.18.0.9"],
        },
    ],
    "vips": [
        {
            "address": "192.0.2.10",
            "cluster": "c1",
            "services": [
                {
                    "name": "m",
                    "port": 80,
                    "maglev_table_size": 7,
                    "backends": [
                        {"address": "198.51.100.1", "port": 80},
                        {"address": "198.51.100.2", "port": 80, "state": "disabled"},
                        {"address": "2001:db8::5", "port": 80},  # not given to the forwarder
                    ],
                },
                {
                    "name": "w",
                    "port": 81,
                    "scheduler": "wrr",
                    "backends": [
                        {"address": "198.51.100.1", "port": 81, "weight": 2047},
                        {"address": "198.51.100.2", "port": 81, "weight": 1, "state": "draining"},
                        {"address": "198.51.100.3", "port": 81, "weight": 0},
                    ],
                },
                {"name": "l", "port": 82, "scheduler": "wlc", "backends": [{"address": "198.51.100.1", "port": 82}]},
                {"name": "d", "port": 83, "forwarding": "dr", "backends": [{"address": "198.51.100.1", "port": 83}]},
            ],
        },
        {"address": "2001:db8::10", "cluster": "c1", "services": [{"name": "x", "port": 80}]},
        {
            "address": "192.0.2.20",
            "cluster": "c1",
            "nodes": ["b"],  # b has no IPv4 LIP; s gets it as the standby cluster's node
            "services": [{"name": "big", "port": 80, "backends": [{"address": "198.51.100.9", "port": 80}]}],
        },
    ],
}


def test_mixed_document_by_hand() -> None:
    """IPv6 VIPs, dr services and IPv6 backends are not counted; backends in every state are; a
    node without an IPv4 LIP holds nothing; a standby node holds the VIPs it stands by for."""
    doc = ConfigDocument.model_validate(MIXED)  # structure only: IPv6 and dr would fail validation
    costs = node_costs(doc)
    # a: 2 workers x 1024, l = 3; m (n 2, maglev 7: 4096), w (n 3, k 2, S 2048: 8192), l (n 1, wlc)
    m, w, lc = 2048 + 320 + 384 + 4096, 2048 + 480 + 384 + 8192, 2048 + 160 + 384 + 0
    assert (m, w, lc) == (6848, 11104, 2592)
    assert costs["a"].services == 3
    assert costs["a"].total == 67108864 + 2 * (143360 + 2228224) + (6848 + 11104 + 2592) + 8192 == 71880768
    # b: nothing but the base and its worker
    assert costs["b"].services == 0
    assert costs["b"].total == 67108864 + 36700160 + 2228224 + 0 + 0 == 106037248
    # s (l = 1): m, w, l of 192.0.2.10 and big (maglev 65537, 135168) of 192.0.2.20, as standby
    m, w, lc, big = 2048 + 320 + 128 + 4096, 2048 + 480 + 128 + 8192, 2048 + 160 + 128, 2048 + 160 + 128 + 135168
    assert (m, w, lc, big) == (6592, 10848, 2336, 137504)
    assert costs["s"].services == 4
    assert costs["s"].total == 67108864 + 38928384 + (6592 + 10848 + 2336 + 137504) + 135168 == 106329696


# --- the same selection as the shim ---------------------------------------------------------------


def _documents() -> list[ConfigDocument]:
    standby = example()
    standby["clusters"][0]["standby"] = "dr"
    standby["clusters"].append({"name": "dr"})
    standby["nodes"].append(dict(standby["nodes"][1], id="node-dr", cluster="dr", lip_pool=["198.51.100.120/30"]))
    return [
        ConfigDocument.model_validate(example()),
        ConfigDocument.model_validate(standby),
        ConfigDocument.model_validate(MIXED),
        ConfigDocument.model_validate(generate(300, 3, services_per_vip=7)),
    ]


@pytest.mark.parametrize("doc", _documents(), ids=["example", "standby", "mixed", "generated"])
def test_cost_counts_what_the_shim_programs(doc: ConfigDocument) -> None:
    """The budget's services, backends and LIPs are exactly those of the shim's desired state."""
    costs = node_costs(doc)
    for n in doc.nodes:
        st = desired_state(doc, {}, n.id, 1)
        parts = [
            (
                service_bytes(len(s.backends), len(s.lips), 0),
                scheduler_table_bytes(s.scheduler, s.table, [b.weight for b in s.backends]),
            )
            for s in st.services
        ]
        cost = costs[n.id]
        assert cost.services == len(st.services)
        assert cost.service_structures == sum(p[0] for p in parts)
        assert cost.scheduler_tables == sum(p[1] for p in parts)
        assert cost.transient == max((p[1] for p in parts), default=0)
        assert cost.connection_tables == n.forwarder.workers * worker_bytes(n.forwarder.conn_capacity)


@pytest.mark.parametrize("doc", _documents(), ids=["example", "standby", "mixed", "generated"])
def test_serving_nodes_agree_with_node_view(doc: ConfigDocument) -> None:
    serving = ServingNodes(doc)
    for n in doc.nodes:
        view = node_view(doc, n.id)
        assert view is not None
        mine = []
        for v in doc.vips:
            primary, standby = serving(v)
            if n.id in primary:
                mine.append((v.address, "primary"))
            elif n.id in standby:
                mine.append((v.address, "standby"))
        assert mine == [(v.address, role) for v, role in view.vips]
    for v in doc.vips:
        assert serving(v) == doc.vip_nodes(v)


# --- validation -----------------------------------------------------------------------------------


def test_exactly_at_the_budget_is_accepted_one_byte_less_is_not() -> None:
    doc = load_document(json.dumps(with_forwarder({"memory_budget": 106322496})))  # node-a's figure, by hand
    assert doc.nodes[0].forwarder.memory_budget == 106322496
    with pytest.raises(ConfigInvalid) as info:
        load_document(json.dumps(with_forwarder({"memory_budget": 106322495})))
    (issue,) = info.value.issues
    assert issue.path == "nodes[0].forwarder.memory_budget"
    assert issue.reason.startswith("node node-a needs 101.4 MiB (106322496 bytes: scheduler tables 136 KiB for 4 ")
    assert "connection tables 37.1 MiB for 1 worker x 262144 connections" in issue.reason
    assert "base 64 MiB" in issue.reason and "transient 132 KiB" in issue.reason
    assert "more than its memory budget of 101.4 MiB (106322495 bytes): raise the budget" in issue.reason


def test_many_maglev_services_need_a_bigger_budget() -> None:
    """4090 default Maglev services on each of two nodes (1 backend, 1 LIP each): 637.6 MiB, over
    the default 512 MiB; the generator's 1 GiB budget fits."""
    raw = generate(4090, 1)
    assert len(raw["nodes"]) == 2
    per_service = 2048 + 160 + 128 + 135168
    need = 67108864 + 38928384 + 4090 * per_service + 135168
    assert need == 668563776
    load_document(json.dumps(raw))  # 1 GiB each
    small = copy.deepcopy(raw)
    for n in small["nodes"]:
        del n["forwarder"]
    with pytest.raises(ConfigInvalid) as info:
        load_document(json.dumps(small))
    issues = info.value.issues
    assert [i.path for i in issues] == ["nodes[0].forwarder.memory_budget", "nodes[1].forwarder.memory_budget"]
    assert issues[0].reason.startswith("node n0 needs 637.6 MiB (668563776 bytes: scheduler tables 527.2 MiB for ")
    assert "for 4090 services" in issues[0].reason and "memory budget of 512 MiB (536870912 bytes)" in issues[0].reason
    # smaller tables fit the default budget: Maglev 4093 -> round4k(8186) = 8192
    for v in small["vips"]:
        for s in v["services"]:
            s["maglev_table_size"] = 4093
    load_document(json.dumps(small))
