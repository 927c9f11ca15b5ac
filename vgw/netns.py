"""Sockets in another network namespace, for a process that lives in its own.

A service whose control traffic (NATS) stays in one namespace can open its data sockets — probes,
for instance — in another: the calling thread enters the target namespace just to create the
socket, then returns. A socket keeps the namespace it was created in, so connect, send and the
event loop's polling work on it as on any other. ``setns`` affects only the calling thread.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_fds: dict[str, int] = {}


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _fd(name: str) -> int:
    fd = _fds.get(name)
    if fd is None:
        path = name if name.startswith("/") else f"/var/run/netns/{name}"
        fd = _fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return fd


def socket_in(netns: str, family: int, kind: int) -> socket.socket:
    """A new socket created in the network namespace ``netns`` (a name under /var/run/netns or a
    path). Raises OSError when the namespace does not exist or the caller lacks CAP_SYS_ADMIN."""
    with _lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(_fd(netns))
            try:
                return socket.socket(family, kind)
            finally:
                _setns(home)
        finally:
            os.close(home)
