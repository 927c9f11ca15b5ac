"""Per-backend figures in the traffic snapshot (:func:`vgw.traffic.node_traffic`) and in ``vgwctl
top``'s rates (:mod:`vgw.cli.top`): a node with more backends than a snapshot carries keeps its
busiest ones and stays far below NATS's 1 MiB message limit, and rates are only given where two
snapshots can be compared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from vgw.cli.top import Filter, aggregate, as_text
from vgw.traffic import SNAPSHOT_BACKENDS_MAX, NodeTraffic, node_traffic

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def backend(i: int, active: int, new: int) -> dict[str, Any]:
    return {"address": f"198.18.{i // 256}.{i % 256}", "port": 8080, "conn_active": active, "conn_new": new}


def service(backends: list[dict[str, Any]], vip: str = "192.0.2.10") -> dict[str, Any]:
    total_new = sum(b["conn_new"] for b in backends)
    return {"vip": vip, "port": 80, "proto": "tcp", "conn_new": total_new, "backends": backends}


def stats(services: dict[str, Any]) -> dict[str, Any]:
    return {"pid": 7, "uptime_ms": 5000, "services": services}


def test_a_node_at_the_backend_limit_keeps_its_busiest_backends_under_one_mib() -> None:
    # 4096 services x 16 backends = 65,536 (the forwarder's limit); a few are busy
    busy = {(17, 3): (50, 900), (4000, 15): (0, 7000), (2, 0): (1, 1)}
    services = {
        f"svc{s}": service(
            [backend(s * 16 + j, *busy.get((s, j), (0, 0))) for j in range(16)], vip=f"192.0.2.{s % 250}"
        )
        for s in range(4096)
    }
    snap = node_traffic("n1", stats(services), T0)
    kept = [(name, b) for name, s in snap.services.items() for b in s.backends]
    assert len(kept) == SNAPSHOT_BACKENDS_MAX
    assert all(s.backends_total == 16 for s in snap.services.values())
    by_addr = {str(b.address): b for _n, b in kept}
    # the busy ones are all kept, whatever their place in the reply
    assert by_addr["198.18.1.19"].conn_active == 50 and by_addr["198.18.1.19"].conn_new == 900  # svc17, #3
    assert by_addr["198.18.250.15"].conn_new == 7000  # svc4000, #15
    assert by_addr["198.18.0.32"].conn_active == 1  # svc2, #0
    assert len(NodeTraffic.model_validate_json(snap.model_dump_json()).services) == 4096
    assert len(snap.model_dump_json()) < 1 << 20, len(snap.model_dump_json())


def test_a_reply_without_backends_gives_none() -> None:
    """A forwarder older than the per-backend counters: its services have no backends."""
    snap = node_traffic("n1", stats({"web": {"vip": "192.0.2.10", "port": 80, "proto": "tcp"}}), T0)
    assert (snap.services["web"].backends, snap.services["web"].backends_total) == ([], 0)


def frame(before: dict[str, Any], after: dict[str, Any], **flt: Any) -> dict[str, Any]:
    prev = node_traffic("n1", stats(before), T0)
    cur = node_traffic("n1", stats(after), T0 + timedelta(seconds=2))
    return aggregate({"n1": prev}, {"n1": cur}, Filter(**flt), T0 + timedelta(seconds=2))


def test_backend_rates_over_two_snapshots() -> None:
    before = {"web": service([backend(1, 3, 10), backend(2, 0, 100)])}
    after = {"web": service([backend(1, 4, 30), backend(2, 0, 5), backend(3, 1, 6)])}
    (web,) = frame(before, after)["services"]
    rates = {b["address"]: (b["conn_active"], b["conn_new_per_s"]) for b in web["backends"]}
    # 20 in 2 s; re-created in between (its count went down): none; new since (the earlier snapshot
    # had all of them): counted from zero
    assert rates == {"198.18.0.1": (4, 10.0), "198.18.0.2": (0, 0.0), "198.18.0.3": (1, 3.0)}
    assert web["backends_complete"] is True


def test_a_truncated_snapshot_gives_no_rate_to_a_backend_it_lacked_and_says_so() -> None:
    quiet = [backend(i, 0, 0) for i in range(SNAPSHOT_BACKENDS_MAX - 1)]
    # 1025 backends: the quietest one is left out, and among equally quiet ones the reply's order
    # decides (the last); in the second snapshot the one left out of the first is busy
    before = {"web": service([backend(5000, 0, 40), *quiet, backend(1023, 0, 0)])}
    after = {"web": service([backend(5000, 9, 60), *quiet, backend(1023, 1, 500)])}
    prev = node_traffic("n1", stats(before), T0)
    assert len(prev.services["web"].backends) == SNAPSHOT_BACKENDS_MAX and prev.services["web"].backends_total == 1025
    assert "198.18.3.255" not in {str(b.address) for b in prev.services["web"].backends}
    (web,) = frame(before, after)["services"]
    assert web["backends_complete"] is False
    rows = {b["address"]: (b["conn_active"], b["conn_new_per_s"]) for b in web["backends"]}
    assert len(rows) == SNAPSHOT_BACKENDS_MAX and "198.18.3.254" not in rows  # left out of the second
    assert rows["198.18.19.136"] == (9, 10.0)  # in both: (60 - 40) / 2
    assert rows["198.18.3.255"] == (1, 0.0)  # its 500 may be old: no rate from one snapshot
    assert "(busiest backends only)" in as_text(frame(before, after))


def test_filters_and_no_backends() -> None:
    snap = {"web": service([backend(1, 2, 0)]), "dns": service([backend(2, 1, 0)], vip="192.0.2.53")}
    assert [s["service"] for s in frame(snap, snap, vip="192.0.2.53")["services"]] == ["dns"]
    bare = frame(snap, snap, backends=False)
    assert all("backends" not in s for s in bare["services"])
    assert "198.18.0.1:8080" not in as_text(bare) and "198.18.0.1:8080" in as_text(frame(snap, snap))
