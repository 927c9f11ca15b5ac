"""One vgw-fwd process for a test or a benchmark: started with a unique EAL file prefix, awaited
until it says it is ready, and stopped (SIGTERM, then SIGKILL) with its EAL files removed, even when
the test fails; and waiting for what it reports to reach a state."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files

T = TypeVar("T")


def until(fetch: Callable[[], T], cond: Callable[[T], bool], what: str, timeout_s: float = 15.0) -> T:
    """fetch() again every 50 ms until cond holds for its value (returned); fails with the last
    value after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if cond(value):
            return value
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s; last: {value!r}"[:2000]
        time.sleep(0.05)


@dataclass(frozen=True)
class FwdProcess:
    proc: subprocess.Popen[bytes]
    socket: Path
    prefix: str
    log: Path


@contextlib.contextmanager
def vgw_fwd(
    workdir: Path,
    eal: list[str],
    args: list[str],
    *,
    socket: Path | None = None,
    memory_mb: int = 128,
    wait_s: float = 20.0,
) -> Iterator[FwdProcess]:
    """Run ``vgw-fwd --no-huge -m memory_mb <unique prefix> --no-pci <eal> -- --socket S <args>``."""
    prefix = f"vgwp{secrets.token_hex(4)}"
    sock = socket or workdir / f"{prefix}.sock"
    log = workdir / f"{prefix}.log"
    cmd = [
        str(FWD_BIN), "--no-huge", "-m", str(memory_mb), "--file-prefix", prefix, "--no-pci",
        "--log-level", "*:error", *eal, "--", "--socket", str(sock), *args,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + wait_s
        while b"vgw-fwd ready" not in log.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"vgw-fwd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vgw-fwd not ready in {wait_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield FwdProcess(proc=proc, socket=sock, prefix=prefix, log=log)
    finally:
        stop_session(proc)
        cleanup_dpdk_files(prefix)


def stop_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the session proc leads (started with ``start_new_session``), so its children go
    too; SIGKILL when it has not exited within 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
