"""Fixtures for the forwarder suites: a namespace lab with a running vgw-fwd (real DPDK, af_packet)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forwarder.topology import BACKEND_IPS, LIP, VIP, Topology, have_prereqs

REASON = have_prereqs()
needs_lab = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def config_doc(generation: int, states: dict[str, str] | None = None, sched: str = "wrr") -> str:
    states = states or {}
    lines = ["vgw-config 1", f"generation {generation}", f"service web tcp {VIP} 80 {sched} toa=on", f"lip web {LIP}"]
    lines += [f"backend web {ip} 80 100 {states.get(ip, 'active')}" for ip in BACKEND_IPS]
    return "\n".join([*lines, "end", ""])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Namespaces + three HTTP backends; tests start (and may kill) the forwarder themselves."""
    topo = Topology(Path(tmp_path_factory.mktemp("fwdlab")))
    try:
        topo.build()
        topo.start_backends()
        yield topo
    finally:
        with contextlib.suppress(Exception):
            topo.kill_forwarder()
        topo.close()
