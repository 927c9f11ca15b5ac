"""The lab's processes: started detached with a marker in their environment (``VGW_LAB=<id>``), so
``down`` finds and stops every one of them — also after a crash of whatever started them, and also
the children they spawned (ExaBGP, the forwarders behind ``ip netns exec``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path

MARKER = "VGW_LAB"


def start(
    plan_id: str, name: str, cmd: list[str], env: dict[str, str], logdir: Path, ns: str | None = None
) -> subprocess.Popen[bytes]:
    full = (["ip", "netns", "exec", ns] if ns else []) + cmd
    log = open(logdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            full, env={**env, MARKER: plan_id}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()


def marked(plan_id: str) -> list[int]:
    """PIDs of live processes carrying this lab's marker."""
    needle = f"{MARKER}={plan_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def cmdline(pid: int) -> bytes:
    """The NUL-separated command line (with a final NUL), or b"" for a process gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def is_exe(pid: int) -> bool:
    """False for the ``ip netns exec`` wrapper (it replaces itself, but briefly it is the process)."""
    return not cmdline(pid).startswith(b"ip\0")


def with_env(plan_id: str, key: str, value: str) -> list[int]:
    """This lab's live processes whose environment has ``key=value``, without their children (which
    inherit it: routectl's ExaBGP)."""
    needle = f"{key}={value}".encode()
    out = []
    for pid in marked(plan_id):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0") and _state(pid) != "Z":
                    out.append(pid)
        except OSError:
            continue
    return [pid for pid in out if _ppid(pid) not in out]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def in_namespaces(namespaces: list[str]) -> list[int]:
    pids: list[int] = []
    for ns in namespaces:
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        pids += [int(p) for p in r.stdout.split() if p.isdigit()]
    return pids


def stop_all(
    plan_id: str, namespaces: list[str], grace_s: float = 8.0, after: Sequence[Collection[int]] = ()
) -> tuple[int, list[str]]:
    """SIGTERM every lab process (services stop gracefully: routectl withdraws, forwarders drain),
    the groups in ``after`` last, one group after the other (as systemd orders the units: route
    control, then the shim, then the forwarder, NATS at the end), then SIGKILL what is left.
    Returns how many processes were found, and the command lines of those still there after
    ``grace_s`` (killed)."""
    me = os.getpid()
    pids = {p for p in marked(plan_id) + in_namespaces(namespaces) if p != me}
    later = [pids & set(group) for group in after]
    first = pids.difference(*later)
    stubborn: list[str] = []
    for group in (first, *later):
        stubborn += [cmdline(p).replace(b"\0", b" ").decode(errors="replace")[:200] for p in _terminate(group, grace_s)]
    for pid in set(marked(plan_id) + in_namespaces(namespaces)) - {me}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids), stubborn


def _terminate(pids: set[int], grace_s: float) -> set[int]:
    """SIGTERM ``pids``; those still alive after ``grace_s``."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while True:
        alive = {p for p in pids if os.path.exists(f"/proc/{p}") and _state(p) != "Z"}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"
