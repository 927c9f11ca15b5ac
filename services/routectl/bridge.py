"""ExaBGP's API process: relays between ExaBGP (stdin/stdout) and routectl (a Unix socket).

ExaBGP runs this as its ``process``; it connects to routectl's socket, sends a token line so
routectl knows it is its own speaker, then copies bytes both ways. It is a standalone script (no
project imports), so ExaBGP can run it in any network namespace with any working directory.

Lifetime: it exits when either side closes, and asks the kernel to kill it when ExaBGP dies
(``PR_SET_PDEATHSIG``). When routectl's side closes (routectl died) it sends ExaBGP ``shutdown``
before exiting: ExaBGP 5.0 keeps running when its API process ends (``exabgp.api.terminate`` is not
acted on), so this -- with the ``PR_SET_PDEATHSIG`` of :mod:`.launch` -- is what makes sure no
orphan speaker keeps routes alive.

Usage: ``python bridge.py SOCKET_PATH TOKEN``
"""

import ctypes
import os
import signal
import socket
import sys
import threading

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        sys.stderr.write("usage: bridge.py SOCKET_PATH TOKEN\n")
        sys.exit(2)
    _die_with_parent()
    path, token = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(f"{token}\n".encode())
    except OSError as exc:
        sys.stderr.write(f"bridge: cannot reach routectl at {path}: {exc}\n")
        os._exit(1)

    def exabgp_to_routectl() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=exabgp_to_routectl, daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                n = os.write(1, view)
                view = view[n:]
    except OSError:
        pass
    # routectl is gone: ExaBGP 5 keeps running (and announcing) when its API process ends, so ask
    # it to shut down (it sends a NOTIFICATION and closes its sessions) before leaving.
    try:
        os.write(1, b"shutdown\n")
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
