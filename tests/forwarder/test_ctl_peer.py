"""Who may talk to vgw-fwd's control socket: root, the forwarder's own user, and (with
--socket-group) that group. The file's mode is the first fence; the peer's credentials
(SO_PEERCRED) are checked as well, so even a socket whose mode someone loosened serves nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataplane.shim.fwdctl import FwdClient
from tests.forwarder.topology import FWD_BIN, cleanup_dpdk_files

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not FWD_BIN.exists() or not Path("/usr/bin/setpriv").exists(),
    reason="needs root, vgw-fwd and setpriv",
)

NOBODY = 65534
GROUP = 40000 + secrets.randbelow(20000)  # a gid no account needs to have

# A HELLO from another identity: prints the reply's first bytes, or what went wrong.
CLIENT = r"""
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(struct.pack("!4sBBHII", b"VGWC", 1, 1, 0, 0, 7))
    head = s.recv(16)
    print("reply" if head[:4] == b"VGWC" else "closed" if not head else "garbage")
except PermissionError:
    print("permission denied")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
"""


def as_user(uid: int, gid: int, sock: Path) -> str:
    r = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-c", CLIENT, str(sock)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return r.stdout.strip() or r.stderr.strip()


@pytest.fixture
def grouped_fwd(tmp_path: Path) -> Iterator[Path]:
    prefix = f"vgwg{secrets.token_hex(4)}"
    # pytest's tmp_path is private to root: the socket goes where other users can reach it, so
    # the socket itself is the fence
    run = Path(tempfile.mkdtemp(prefix="vgw-peer-", dir="/tmp"))
    run.chmod(0o755)
    sock = run / "fwd.sock"
    log = tmp_path / "fwd.log"
    proc = subprocess.Popen(
        [str(FWD_BIN), "--no-huge", "-m", "128", "--file-prefix", prefix, "--lcores", "0@0,1@0", "--no-pci",
         "--log-level", "*:error", "--vdev", "net_ring0", "--", "--single-arm", "--ext", "net_ring0,198.18.0.1/16",
         "--socket", str(sock), "--socket-group", str(GROUP)],
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
        shutil.rmtree(run, ignore_errors=True)


async def rejected_peers(sock: Path) -> int:
    c = FwdClient(str(sock), timeout_s=5)
    try:
        return int((await c.stats())["counters"]["ctl_ctl_rejected_peers"])
    finally:
        await c.close()


def test_socket_group_and_peer_credentials(grouped_fwd: Path) -> None:
    st = grouped_fwd.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == GROUP and st.st_uid == 0
    # a member of the socket group (by its gid) is served
    assert as_user(NOBODY, GROUP, grouped_fwd) == "reply"
    # anyone else cannot even open it
    assert as_user(NOBODY, NOBODY, grouped_fwd) == "permission denied"
    assert asyncio.run(rejected_peers(grouped_fwd)) == 0
    # with the mode loosened by someone, the credentials check still turns them away
    grouped_fwd.chmod(0o666)
    assert as_user(NOBODY, NOBODY, grouped_fwd) == "closed"
    assert asyncio.run(rejected_peers(grouped_fwd)) == 1
    assert as_user(NOBODY, GROUP, grouped_fwd) == "reply"
