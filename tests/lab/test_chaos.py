"""The chaos suite's short form (deploy/lab/chaos.py; ``make chaos`` runs every fault): in a lab of
its own under steady client traffic, a shim killed and restarted, route control killed and
restarted, a shim paused past the heartbeat bound, a node's management link cut, and a forwarder
killed while NATS is down. Each fault's bounds are the suite's: a control-plane fault fails no
request, changes no route at the router, publishes no withdraw and no backend event; the forwarder
kill moves the traffic within 3 s -- without the bus, by route control's own look at its forwarder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from deploy.lab import chaos
from deploy.lab.lab import Lab
from tests.conftest import REPO
from tests.lab.conftest import lab_up

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chaos_lab() -> Iterator[Lab]:
    with lab_up("c") as lab:
        yield lab


def test_short_chaos(chaos_lab: Lab) -> None:
    results = chaos.Chaos(chaos_lab, lambda _m: None).run(chaos.faults_named(chaos.SHORT))
    assert [r.fault for r in results] == list(chaos.SHORT)
    failed = [r for r in results if not r.passed]
    assert not failed, "\n" + chaos.table(results)
    fwd = results[-1]
    assert fwd.moved_s is not None and fwd.withdraws >= 1, fwd  # the kill did move the traffic
    assert all(r.sent >= 50 for r in results), chaos.table(results)  # traffic flowed through every window


def test_unknown_fault_is_a_usage_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", "lab", "--id", "zq9", "chaos", "--fault", "kill -9 everything"],
        capture_output=True, text=True, cwd=str(REPO), timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert "unknown fault" in r.stderr and "kill -9 shim-a" in r.stderr
