"""The forwarding gap of a forwarder restart and upgrade in the lab (issue #16's goal: <= 500 ms).

Brings up a lab (``vgwctl lab up``: two nodes, af_packet on veth pairs, BIRD as the router) and
runs the long-lived scenarios ``ll-forwarder-restart`` (kill -9 node-a's vgw-fwd, start it again
at once) and ``ll-forwarder-upgrade`` (a new vgw-fwd file, SIGTERM, start) ``--runs`` times each
(default 5), 200 connections each time. ``gap_ms`` is the longest time node-a's UDP probe flows
went unanswered (deploy/lab/udpprobe.py, a datagram every 5 ms per flow); ``ready_ms`` the signal
-> the new process ready; ``broken`` the connections lost over all runs (the goal: 0).

The goal is judged here, by the median over runs, not by one run in a test: one restart's gap moves
with whatever else the machine does (tests/lab/test_longlived.py holds each run to twice the goal).
Prints one JSON object per case, then a table. No peer runs here (LVS needs the IPVS module).
Needs root, DPDK, BIRD and nats-server (`make setup`); about 1 minute per run of both cases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy.lab.lab import FWD, Lab
from deploy.lab.longlived import GAP_GOAL_MS, LongLived

CASES = {"ll-forwarder-restart": "lab_fwd_restart_kill9", "ll-forwarder-upgrade": "lab_fwd_upgrade_sigterm"}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--conns", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0 or not FWD.exists():
        print("# skipped: needs root and dataplane/build/vgw-fwd", flush=True)
        return 0
    lab = Lab("b" + secrets.token_hex(2)[:3], progress=lambda _m: None)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    try:
        print(f"# lab {lab.plan.id} up ...", flush=True)
        lab.up()
        ll = LongLived(lab, lambda _m: None, conns=args.conns)
        for i in range(args.runs):
            for name in CASES:
                r = ll.run(name)
                gap: dict[str, Any] = r.summary.get("forwarding_gap") or {}  # type: ignore[assignment]
                rec = {"gap_ms": float(r.measured.get("forwarding_gap_ms", -1.0)),
                       "ready_ms": 1000 * float(r.measured.get("fwd_ready_after_s", -1.0)),
                       "broken": int(str(r.summary.get("broken", -1))),
                       "flows_crossing": int(gap.get("flows_crossing", 0))}  # fmt: skip
                runs[name].append(rec)
                print(f"# run {i + 1}/{args.runs} {name}: " + ", ".join(f"{k} {v:g}" for k, v in rec.items()),
                      flush=True)  # fmt: skip
    finally:
        lab.down()
        shutil.rmtree(f"/tmp/vgw-lab-{lab.plan.id}", ignore_errors=True)  # its logs; a bench keeps nothing
    rows: list[dict[str, Any]] = []
    for name, case in CASES.items():
        rs = [x for x in runs[name] if x["flows_crossing"] > 0]  # a run no probe flow crossed measured nothing
        if not rs:
            print(json.dumps({"case": case, "error": "no run measured a gap"}), flush=True)
            continue
        median = round(statistics.median(x["gap_ms"] for x in rs), 1)
        row: dict[str, Any] = {
               "case": case, "gap_ms": median, "ready_ms": round(statistics.median(x["ready_ms"] for x in rs), 1),
               "broken": sum(x["broken"] for x in runs[name]), "conns": args.conns, "runs": len(rs),
               "runs_gap_ms": [x["gap_ms"] for x in rs],
               "spread_ms": round(max(x["gap_ms"] for x in rs) - min(x["gap_ms"] for x in rs), 1),
               "goal_ms": GAP_GOAL_MS, "goal_met": median <= GAP_GOAL_MS,
               "cpu": cpu_model(), "ncpu": os.cpu_count(),
               "pmd": "net_af_packet on veth, 1 worker per node, --no-huge", "peer": None}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{'case':<26} {'gap ms':>8} {'spread':>7} {'ready ms':>9} {'broken':>7} {'goal':>6}")
    for row in rows:
        print(f"{row['case']:<26} {row['gap_ms']:>8} {row['spread_ms']:>7} {row['ready_ms']:>9} {row['broken']:>7} "
              f"{'met' if row['goal_met'] else 'MISSED':>6}")  # fmt: skip
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
