"""vgw-fwd's shorter TSC calibration at start (dataplane/dpdk/tsccal.h): DPDK 22.11 measures the TSC
rate across a 100 ms sleep on CPUs that do not state it (AMD, most VMs), and vgw-fwd has it measured
across 20 ms to shorten a restart's forwarding gap. What must not change is the result: the rate the
EAL settles on is the CPU's. (How much shorter the start is: docs/benchmarks.md, "Forwarder restarts".)
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not FWD_BIN.exists(), reason="needs root and vgw-fwd")


def cpu_mhz() -> float | None:
    """The CPU's nominal rate from /proc/cpuinfo (None where the kernel does not say it)."""
    m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", Path("/proc/cpuinfo").read_text(), re.M)
    return float(m.group(1)) if m else None


def eal_tsc_khz(prefix: str) -> int:
    """The TSC rate the EAL measured, from a forwarder that stops right after rte_eal_init (its
    own arguments are refused: no --ext)."""
    r = subprocess.run(
        [str(FWD_BIN), "--no-huge", "-m", "64", "--no-pci", "--file-prefix", prefix, "-l", "0",
         "--log-level", "lib.eal:debug", "--", "--workers", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    m = re.search(r"TSC frequency is ~(\d+) KHz", r.stdout + r.stderr)
    assert m, f"no TSC line from the EAL (rc {r.returncode}): {r.stderr[-2000:]}"
    assert r.returncode == 2, r.stderr[-2000:]  # refused after the EAL: the settings error, not a crash
    return int(m.group(1))


def test_the_shorter_calibration_measures_the_cpus_rate() -> None:
    mhz = cpu_mhz()
    if mhz is None:
        pytest.skip("/proc/cpuinfo has no 'cpu MHz' to compare with")
    prefix = f"tsc-{secrets.token_hex(3)}"
    try:
        rates = [eal_tsc_khz(prefix) / 1000 for _ in range(3)]
    finally:
        cleanup_dpdk_files(prefix)
    # the EAL rounds to 10 MHz; the kernel's figure is its own calibration of the same counter
    for rate in rates:
        assert abs(rate - mhz) <= max(20.0, 0.01 * mhz), (rates, mhz)
