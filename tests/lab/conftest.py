"""The lab for the tests of this directory: one per test module (module scope), with a random id,
and nothing of it left behind."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab import net, procs
from deploy.lab.lab import FWD, Lab


def _prereqs() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("bird", "nats-server", "nft", "ethtool"):
        if not shutil.which(tool):
            return f"{tool} missing (make setup installs it)"
    if not FWD.exists():
        return f"{FWD} missing (make setup builds it)"
    return None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    why = _prereqs()
    if why:
        pytest.fail(f"the lab cannot run here: {why}")
    lab = Lab("t" + secrets.token_hex(2)[:3], progress=lambda _m: None)  # ids are 1-4 characters
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        plan = lab.plan
        assert not set(plan.namespaces()) & net.existing_namespaces(), "namespaces left behind"
        assert procs.marked(plan.id) == [], "processes left behind"
        assert not list(Path("/var/run/dpdk").glob(f"{plan.file_prefix}-*")), "DPDK runtime files left behind"
        shutil.rmtree(f"/tmp/vgw-lab-{plan.id}", ignore_errors=True)  # logs of a lab we built; keep nothing
