"""Each lab node's management link: the path its shim and route control take to NATS.

On a real machine a node reaches NATS over a management network that can fail on its own while the
node's forwarder keeps forwarding. In the lab every process runs on one host and reaches NATS on
loopback, so each node gets a relay (``mgmt-<n>``, a small TCP forwarder, one listening port per NATS
server) and its shim and route control connect through it. Cutting the link (SIGUSR1 to the relay)
makes it silent the way a dead link is: bytes in either direction are held, new connections are
accepted by the kernel and then get nothing -- no reset, no close; clients find out only by their own
timeouts. Restoring it (SIGUSR2) lets everything held through, like a link that came back before TCP
gave up.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lab import Lab

RELAY = r"""
import asyncio, signal, sys
pairs = [tuple(int(p) for p in arg.split(":")) for arg in sys.argv[1:]]
async def main():
    up = asyncio.Event()
    up.set()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, up.clear)
    loop.add_signal_handler(signal.SIGUSR2, up.set)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                await up.wait()
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()
    async def handle(cr, cw, target):
        await up.wait()
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, tw), pipe(tr, cw))
    for listen, target in pairs:
        await asyncio.start_server(lambda r, w, t=target: handle(r, w, t), "127.0.0.1", listen)
    print("mgmt link up", flush=True)
    await asyncio.Event().wait()
try:
    asyncio.run(main())
except RuntimeError:
    pass  # SIGTERM stopped the loop
"""


def start(lab: Lab, n: str, free_port: object) -> str:
    """Start node ``n``'s relay; returns the NATS URL (list) its processes use."""
    assert lab.state is not None
    servers = lab.state.nats_url.split(",")
    pairs, urls = [], []
    for url in servers:
        scheme, _, hostport = url.partition("://")
        target = int(hostport.rsplit(":", 1)[1])
        listen = free_port()  # type: ignore[operator]
        pairs.append(f"{listen}:{target}")
        urls.append(f"{scheme}://127.0.0.1:{listen}")
    env = {**lab._env(), "VGW_INSTANCE_ID": f"mgmt-{n}"}
    lab._start(f"mgmt-{n}", [sys.executable, "-c", RELAY, *pairs], env=env)
    return ",".join(urls)


def cut(lab: Lab, n: str) -> None:
    _signal(lab, n, signal.SIGUSR1)


def restore(lab: Lab, n: str) -> None:
    _signal(lab, n, signal.SIGUSR2)


def _signal(lab: Lab, n: str, sig: signal.Signals) -> None:
    pids = lab.pids(f"mgmt-{n}")
    if not pids:
        raise RuntimeError(f"node {n}'s management link relay is not running")
    for pid in pids:
        os.kill(pid, sig)
