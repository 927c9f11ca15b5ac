"""Who may talk to vgw-fwd's control socket: root, the forwarder's own user, and (with
--socket-group) that group. The file's mode is the first fence; the peer's credentials
(SO_PEERCRED) are checked as well, so even a socket whose mode someone loosened serves nobody else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forwarder.fwdproc import vgw_fwd
from tests.forwarder.topology import FWD_BIN
from vgw.fwdctl import FwdClient

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
    # pytest's tmp_path is private to root: the socket goes where other users can reach it, so
    # the socket itself is the fence
    run = Path(tempfile.mkdtemp(prefix="vgw-peer-", dir="/tmp"))
    run.chmod(0o755)
    eal = ["--lcores", "0@0,1@0", "--vdev", "net_ring0"]
    args = ["--single-arm", "--ext", "net_ring0,198.18.0.1/16", "--socket-group", str(GROUP)]
    try:
        with vgw_fwd(tmp_path, eal, args, socket=run / "fwd.sock") as fwd:
            yield fwd.socket
    finally:
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
