"""Long-lived connections through the lab (issue #16, part 4): 200 persistent TCP connections to the
VIP's streaming echo (every byte checked) held open through a config change, a node isolation, a
node drain, a forwarder restart, a forwarder upgrade and a node failure (deploy/lab/longlived.py).

Each test asserts the design's promise for its event, after the harness's own checks (connections
opened, spread over both nodes, the fault happened, the lab came back). The node failure without
connection sync is the demo's (``vgwctl lab scenario ll-node-failure-nosync``): it promises nothing
and restarts both forwarders twice, too slow for this file (~2 minutes in all)."""

from __future__ import annotations

import pytest

from deploy.lab.lab import Lab
from deploy.lab.longlived import GAP_BOUND_MS, LongLived
from deploy.lab.scenarios import Result

CONNS = 200


@pytest.fixture(scope="module")
def ll(lab: Lab) -> LongLived:
    return LongLived(lab, lambda _m: None, conns=CONNS)


def harness_ok(r: Result) -> None:
    """The measurement itself worked: every connection opened, and both nodes carried some."""
    s = r.summary
    if s["opened"] != CONNS or not s["client_done"]:
        pytest.fail(f"{r.name}: opened {s['opened']} of {CONNS}, client reported {s['client_done']}: {r}")
    split = s["split"]["by_banner"]  # type: ignore[index]
    # ECMP spreads by the client sockets' hash: 200 connections put far more than 20% on each node
    if min(split.get("node-a", 0), split.get("node-b", 0)) < CONNS // 5:
        pytest.fail(f"{r.name}: connections not spread over both nodes: {split}")


def timing_ok(r: Result, key: str, limit: float) -> None:
    if not 0 <= r.measured[key] <= limit:
        pytest.fail(f"{r.name}: {key} = {r.measured[key]} (limit {limit}): {r}")


def test_config_change_breaks_nothing(ll: LongLived) -> None:
    """Established connections are never broken by a config change (docs/forwarder.md): a backend
    added to the service they use (wlc: the new connections go to it) leaves every byte flowing."""
    r = ll.run("ll-config-change")
    harness_ok(r)
    timing_ok(r, "new_backend_serving_after_s", 15.0)
    assert r.summary["broken"] == 0, r
    assert r.passed, r


def test_node_isolate_breaks_nothing(ll: LongLived) -> None:
    """Isolated, node-a's connections reach node-b, which carries them on from its synced copies
    (connection sync, on in the lab's cluster); restored, they return to node-a, which kept them."""
    r = ll.run("ll-node-isolate")
    harness_ok(r)
    timing_ok(r, "withdrawn_after_s", 15.0)
    timing_ok(r, "restored_after_s", 30.0)
    assert r.summary["broken"] == 0, r


def test_node_drain_breaks_nothing(ll: LongLived) -> None:
    r = ll.run("ll-node-drain")
    if not r.summary.get("available", True):
        pytest.skip(f"vgwctl node drain is not available yet (issue #16): {r.notes}")
    harness_ok(r)
    timing_ok(r, "moved_to_b_after_s", 20.0)
    timing_ok(r, "restored_after_s", 30.0)
    assert r.summary["broken"] == 0, r


@pytest.mark.parametrize("name", ["ll-forwarder-restart", "ll-forwarder-upgrade"])
def test_forwarder_restart_is_hitless(ll: LongLived, name: str) -> None:
    r = ll.run(name)
    harness_ok(r)
    timing_ok(r, "fwd_ready_after_s", 30.0)
    timing_ok(r, "announced_after_s", 30.0)
    gap = r.summary["forwarding_gap"]
    if gap["flows_crossing"] == 0:  # type: ignore[index]
        pytest.fail(f"{name}: no UDP probe flow went through node-a, the gap was not measured: {gap}")
    assert r.summary["broken"] == 0, r
    # the forwarding gap, from UDP flows at 5 ms; TCP's own stall is rounded up to its backoff. One
    # run is held to twice the 500 ms goal; the goal itself is the median of make bench's runs
    # (tests/bench/bench_lab_restart.py): a single run's gap moves with the machine's load.
    assert 0 < gap["forwarding_gap_ms"] <= GAP_BOUND_MS, r  # type: ignore[index]


def test_node_failure_with_sync_keeps_99_percent(ll: LongLived) -> None:
    r = ll.run("ll-node-failure")
    harness_ok(r)
    timing_ok(r, "router_moved_after_s", 7.0)
    timing_ok(r, "reannounced_after_restart_s", 30.0)
    assert float(r.summary["survived_pct"]) >= 99.0, r  # type: ignore[arg-type]
