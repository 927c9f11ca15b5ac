"""The lab for the tests of this directory: one per test module (module scope), with a random id,
and nothing of it left behind; :func:`lab_up` makes one with other options."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab import net, procs
from deploy.lab.lab import FWD, Lab
from tests.lab.browser import browser, open_page, open_page_once  # noqa: F401 - fixtures for the report pages


def _prereqs() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("bird", "nats-server", "nft", "ethtool"):
        if not shutil.which(tool):
            return f"{tool} missing (make setup installs it)"
    if not FWD.exists():
        return f"{FWD} missing (make setup builds it)"
    return None


@contextlib.contextmanager
def lab_up(id_prefix: str, nats_cluster: int = 1) -> Iterator[Lab]:
    """A lab up, with a random id after id_prefix; at the end down, and checked to have left
    nothing behind (namespaces, processes, DPDK runtime files; its logs are removed)."""
    why = _prereqs()
    if why:
        pytest.fail(f"the lab cannot run here: {why}")
    lab_id = id_prefix + secrets.token_hex(2)[:3]  # ids are 1-4 characters
    lab = Lab(lab_id, progress=lambda _m: None, nats_cluster=nats_cluster)
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


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_up("t") as lab:
        yield lab
