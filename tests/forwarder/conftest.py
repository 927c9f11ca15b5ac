"""Fixtures for the forwarder suites: a namespace lab with a running vgw-fwd (real DPDK, af_packet)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forwarder.topology import BACKEND_IPS, FWD_BIN, LIP, VIP, Topology, cleanup_dpdk_files, have_prereqs

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


@pytest.fixture
def ring_fwd(tmp_path: Path) -> Iterator[Path]:
    """A vgw-fwd on ring vdevs (no namespaces): for control-socket tests. Yields its socket."""
    if os.geteuid() != 0 or not FWD_BIN.exists():
        pytest.skip("needs root and dataplane/build/vgw-fwd")
    prefix = f"vgwd{secrets.token_hex(4)}"
    sock = tmp_path / "fwd.sock"
    log = tmp_path / "fwd.log"
    settings = tmp_path / "fwd.conf"  # the settings file form of the flags
    settings.write_text(
        f"# vgw-fwd settings\nmode dual-arm\next net_ring0 203.0.113.1/24\nint net_ring1 198.18.0.1/16\n"
        f"route 0.0.0.0/0 203.0.113.254 ext\nsocket {sock}\nconn-capacity 4096\nworkers 1\n"
    )
    proc = subprocess.Popen(
        [str(FWD_BIN), "--no-huge", "-m", "128", "--file-prefix", prefix, "--lcores", "0@0,1@0", "--no-pci",
         "--log-level", "*:error", "--vdev", "net_ring0", "--vdev", "net_ring1", "--", "--config", str(settings)],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "vgw-fwd ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield sock
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        cleanup_dpdk_files(prefix)
