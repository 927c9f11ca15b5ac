"""Start ExaBGP so that it cannot outlive routectl: ``python launch.py PARENT_PID NETNS|- CMD...``.

Standalone (no project imports). It asks the kernel to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``, kept across ``execve``), gives up if the parent is already gone, enters the
network namespace ``/run/netns/NETNS`` when one is named, and then execs the command (ExaBGP). A
killed ExaBGP's TCP sessions are closed by the kernel, so the peers drop its routes at once.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000


def main() -> None:
    if len(sys.argv) < 4:
        sys.stderr.write("usage: launch.py PARENT_PID NETNS|- CMD...\n")
        sys.exit(2)
    parent, netns, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        sys.stderr.write(f"launch: prctl failed: {os.strerror(ctypes.get_errno())}\n")
        sys.exit(1)
    if os.getppid() != parent:
        sys.exit(1)
    if netns != "-":
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            sys.stderr.write(f"launch: setns {netns}: {os.strerror(ctypes.get_errno())}\n")
            sys.exit(1)
        os.close(fd)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
