"""``vgwctl lab chaos`` refuses what it does not know before it builds anything. The chaos suite's
short form runs in tests/lab/test_lab_e2e.py (on that module's lab); ``make chaos`` runs every fault."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_unknown_fault_is_a_usage_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vgw.cli.main", "lab", "--id", "zq9", "chaos", "--fault", "kill -9 everything"],
        capture_output=True, text=True, cwd=str(REPO), timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert "unknown fault" in r.stderr and "kill -9 shim-a" in r.stderr
