"""Fixtures for the dataplane golden-packet tests.

The tests drive the real C engine through ``vgw-pktdriver`` (built with ASan+UBSan by
``make -C dataplane build``), one fresh process per test, so they run in parallel safely.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DATAPLANE = REPO / "dataplane"
DRIVER = Path(os.environ.get("VGW_PKTDRIVER", DATAPLANE / "build" / "asan" / "vgw-pktdriver"))


@pytest.fixture(scope="session")
def driver_path() -> Path:
    """Build the dataplane once per session; a missing driver is a failure, never a skip."""
    subprocess.run(["make", "-s", "-C", str(DATAPLANE), "build"], check=True)
    assert DRIVER.is_file(), f"{DRIVER} was not built"
    return DRIVER


class Engine:
    """A conversation with one vgw-pktdriver process (one dp, N workers)."""

    def __init__(self, path: Path) -> None:
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        self.proc = subprocess.Popen(
            [str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _cmd(self, line: str, extra: list[str] | None = None) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        for e in extra or []:
            self.proc.stdin.write(e + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"driver died on {line[:80]!r} (rc={self.proc.poll()})"
        return json.loads(reply)

    def init(
        self,
        nworkers: int = 1,
        capacity: int = 4096,
        mtu: int = 1500,
        headroom: int = 128,
        tailroom: int = 4096,
        worker_flags: int = 0,
    ) -> None:
        assert self._cmd(f"init {nworkers} {capacity} {mtu} {headroom} {tailroom} {worker_flags}") == {"ok": True}

    def config(self, text: str) -> dict[str, Any]:
        lines = text.strip("\n").split("\n")
        result: dict[str, Any] = self._cmd(f"config {len(lines)}", lines)
        return result

    def apply(self, text: str) -> None:
        r = self.config(text)
        assert r["ok"], r

    def now(self, ms: int) -> None:
        self._cmd(f"now {ms}")

    def send(self, frame: bytes, worker: int = 0, flags: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = self._cmd(f"pkt {worker} {frame.hex()} {flags}")
        return result

    def burst(self, frames: list[bytes], worker: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._cmd(f"burst {worker} " + " ".join(f.hex() for f in frames))
        return result

    def counters(self, worker: int = 0) -> dict[str, int]:
        result: dict[str, int] = self._cmd(f"counters {worker}")
        return result

    def conn(self, proto: str, cip: str, cport: int, vip: str, vport: int, worker: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = self._cmd(f"conn {worker} {proto} {cip} {cport} {vip} {vport}")
        return result

    def svc(self, proto: str, vip: str, port: int, worker: int = 0) -> dict[str, int]:
        result: dict[str, int] = self._cmd(f"svc {worker} {proto} {vip} {port}")
        return result

    def lips(self, worker: int = 0) -> dict[str, int]:
        result: dict[str, int] = self._cmd(f"lips {worker}")
        return result

    def housekeep(self, budget: int, worker: int = 0) -> int:
        removed: int = self._cmd(f"housekeep {worker} {budget}")["removed"]
        return removed

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=30)
        assert rc == 0, f"driver exited with {rc} (sanitizer report above?)"


@pytest.fixture
def engine(driver_path: Path) -> Iterator[Engine]:
    eng = Engine(driver_path)
    try:
        yield eng
    finally:
        eng.close()
