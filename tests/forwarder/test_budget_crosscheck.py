"""The memory budget is one formula in two places: the config service's (vgw/config/budget.py), which
refuses documents, and vgw-fwd's (the core's vgw_cfg_cost), which refuses applies and reports the
figure. For documents with every scheduler (Maglev with default and custom tables, WRR with
reducible weights and weight 0, WLC), several LIPs and backends in every state, the forwarder's
report for the state the shim renders from a node's view equals the config service's figure for
that node, term by term; and the forwarder enforces its own --memory-budget to the byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dataplane.shim.desired import desired_state, render
from tests.forwarder.fwdproc import vgw_fwd
from tests.forwarder.topology import FWD_BIN
from vgw.config import ConfigDocument
from vgw.config.budget import node_cost
from vgw.config.validate import validate_document
from vgw.fwdctl import FwdClient, FwdError

WORKERS = 2
CAPACITY = 5000

DOC = {
    "version": 1,
    "timeouts": {"udp": "200s"},
    "clusters": [{"name": "lab"}],
    "nodes": [
        {
            "id": "node-a",
            "cluster": "lab",
            "external": {"address": "192.0.2.11/24", "gateway": "192.0.2.1"},
            "internal": {"address": "198.51.100.11/24"},
            "lip_pool": ["198.51.100.101", "198.51.100.104/30"],
            "forwarder": {"workers": WORKERS, "conn_capacity": CAPACITY, "memory_budget": "1Gi"},
        }
    ],
    "vips": [
        {
            "address": "192.0.2.10",
            "cluster": "lab",
            "services": [
                {
                    "name": "web",
                    "port": 80,
                    "backends": [
                        {"address": "198.51.100.21", "port": 80},
                        {"address": "198.51.100.22", "port": 80, "weight": 50, "state": "draining"},
                        {"address": "198.51.100.23", "port": 80, "state": "disabled"},
                    ],
                },
                {
                    "name": "dns",
                    "port": 53,
                    "protocol": "udp",
                    "scheduler": "wrr",
                    "backends": [
                        {"address": "198.51.100.31", "port": 53, "weight": 300},
                        {"address": "198.51.100.32", "port": 53, "weight": 600},
                        {"address": "198.51.100.33", "port": 53, "weight": 0},
                        {"address": "198.51.100.34", "port": 53, "weight": 900, "state": "draining"},
                    ],
                },
            ],
        },
        {
            "address": "192.0.2.20",
            "cluster": "lab",
            "services": [
                {
                    "name": "small",
                    "port": 443,
                    "maglev_table_size": 251,
                    "backends": [{"address": "198.51.100.41", "port": 443}],
                },
                {
                    "name": "big-wrr",
                    "port": 8080,
                    "scheduler": "wrr",
                    "backends": [
                        {"address": f"198.51.100.{50 + i}", "port": 8080, "weight": 65535 - i} for i in range(40)
                    ],
                },
                {
                    "name": "lc",
                    "port": 9000,
                    "scheduler": "wlc",
                    "backends": [{"address": "198.51.100.99", "port": 9000}],
                },
                {"name": "empty", "port": 9001, "backends": []},
            ],
        },
    ],
}


def document() -> ConfigDocument:
    return validate_document(yaml.safe_load(yaml.safe_dump(DOC)))


@contextlib.contextmanager
def forwarder(tmp_path: Path, budget: int | None = None) -> Iterator[Path]:
    if os.geteuid() != 0 or not FWD_BIN.exists():
        pytest.skip("needs root and dataplane/build/vgw-fwd")
    extra = ["--memory-budget", str(budget)] if budget is not None else []
    eal = ["--lcores", "0@0,1@0,2@0", "--vdev", "net_ring0", "--vdev", "net_ring1"]
    args = ["--ext", "net_ring0,192.0.2.11/24", "--int", "net_ring1,198.51.100.11/24", "--workers", str(WORKERS),
            "--conn-capacity", str(CAPACITY), *extra]  # fmt: skip
    with vgw_fwd(tmp_path, eal, args) as fwd:
        yield fwd.socket


async def apply_and_report(sock: Path, text: str) -> dict[str, int]:
    c = FwdClient(str(sock), timeout_s=10)
    try:
        await c.apply(text)
        return dict((await c.stats())["memory"]["cost_bytes"])
    finally:
        await c.close()


def test_forwarder_and_config_service_agree(tmp_path: Path) -> None:
    doc = document()
    expected = node_cost(doc, "node-a")
    assert expected is not None and expected.services == 6
    state = desired_state(doc, {}, "node-a", 1)
    assert len(state.services) == 6
    with forwarder(tmp_path) as sock:
        got = asyncio.run(apply_and_report(sock, render(state, 1)))
    assert got == {
        "base": expected.base,
        "conn_tables": expected.connection_tables,
        "services": expected.service_structures,
        "sched_tables": expected.scheduler_tables,
        "transient": expected.transient,
        "total": expected.total,
    }


def test_forwarder_enforces_its_budget_to_the_byte(tmp_path: Path) -> None:
    doc = document()
    cost = node_cost(doc, "node-a")
    assert cost is not None
    text = render(desired_state(doc, {}, "node-a", 1), 1)
    with forwarder(tmp_path, budget=cost.total - 1) as sock:
        with pytest.raises(FwdError, match=r"memory budget: this configuration needs .* MiB"):
            asyncio.run(apply_and_report(sock, text))

        async def still_empty() -> int:
            c = FwdClient(str(sock), timeout_s=10)
            try:
                return int((await c.hello())["generation"])
            finally:
                await c.close()

        assert asyncio.run(still_empty()) == 0
    with forwarder(tmp_path, budget=cost.total) as sock:
        assert asyncio.run(apply_and_report(sock, text))["total"] == cost.total


def test_resident_memory_stays_within_the_reported_cost(tmp_path: Path) -> None:
    """300 Maglev services (39 MiB of tables), 16 backends and 3 LIPs each, applied twice over:
    what the forwarder holds outside its packet memory (anon + file; the packet memory is shmem
    with --no-huge) stays within the cost it reports."""
    lines = ["vgw-config 1", "generation {gen}"]
    for i in range(300):
        lines.append(f"service s{i} tcp 192.0.2.{1 + i // 100} {1000 + i % 100} maglev")
        lines += [f"lip s{i} 198.51.100.{201 + k}" for k in range(3)]
        lines += [f"backend s{i} 198.51.{i // 10}.{1 + (i % 10) * 16 + k} 80 {1 + k} active" for k in range(16)]
    text = "\n".join([*lines, "end", ""])

    async def scenario(sock: Path) -> dict[str, object]:
        c = FwdClient(str(sock), timeout_s=60)
        try:
            await c.apply(text.format(gen=1))
            # every table rebuilt once more (weights change), the old ones freed
            await c.apply(text.format(gen=2).replace(" 80 1 active", " 80 7 active"))
            await asyncio.sleep(0.5)
            return dict((await c.stats())["memory"])
        finally:
            await c.close()

    with forwarder(tmp_path) as sock:
        mem = asyncio.run(scenario(sock))
    cost = mem["cost_bytes"]
    assert isinstance(cost, dict) and cost["sched_tables"] == 300 * 135168  # 65537 x 2 bytes in whole pages
    resident = int(mem["rss_anon_bytes"]) + int(mem["rss_file_bytes"])  # type: ignore[call-overload]
    assert resident <= cost["total"], (resident, cost)
