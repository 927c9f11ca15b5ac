"""The BGP speaker: one ExaBGP 5 process driven through its API, owned by routectl.

* routectl listens on a Unix socket (mode 0600, in a private 0700 directory) and starts ExaBGP
  through :mod:`.launch` (``PR_SET_PDEATHSIG``: the kernel kills ExaBGP when routectl dies, which
  closes its BGP sessions). ExaBGP's API process is :mod:`.bridge`, which connects back to the
  socket. Should routectl die, the bridge sees the socket close and tells ExaBGP ``shutdown``
  (ExaBGP 5.0 does not exit by itself when its API process ends). ExaBGP runs as routectl's own
  user: ExaBGP switches to ``exabgp.daemon.user`` when started as root, and a uid change would
  clear the parent-death signal.
* The decision side only sets the *desired* routes (:meth:`Speaker.set_route`). A sync task sends
  the difference between desired and sent, one command at a time, each awaiting ExaBGP's
  acknowledgement (``done``/``error``) with a timeout: no unbounded pipe buffering, and several
  changes of one VIP while a command is in flight collapse into the last one. The reader task always
  drains ExaBGP's output, so ExaBGP never blocks writing to us (ExaBGP writes to its API process
  synchronously).
* ExaBGP keeps the routes it was given and re-sends them itself when a BGP session comes back. When
  ExaBGP itself restarts (it died, an ack timed out, the node's BGP config changed), everything
  desired is sent again.
* Peer states come from ExaBGP's ``neighbor-changes`` JSON messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vgw.config import Node
from vgw.events import BgpAttributes
from vgw.naming import IP

from . import metrics
from .settings import RoutectlSettings

log = logging.getLogger("routectl.speaker")
exa_log = logging.getLogger("routectl.exabgp")

HERE = Path(__file__).resolve().parent


class SpeakerError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class PeerSpec:
    address: str
    asn: int
    port: int
    hold_time: int
    password: str | None
    local_address: str
    multihop: int | None


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """What ExaBGP's configuration is made of; a change restarts ExaBGP."""

    router_id: str
    local_asn: int
    peers: tuple[PeerSpec, ...]
    graceful_restart_s: int

    @classmethod
    def from_node(cls, node: Node, graceful_restart_s: int) -> SpeakerConfig | None:
        bgp = node.bgp
        if bgp is None:
            return None
        local = str(node.external.address.ip)
        peers = tuple(
            PeerSpec(
                address=str(p.address),
                asn=p.asn,
                port=p.port,
                hold_time=p.hold_time,
                password=p.password,
                local_address=str(p.local_address) if p.local_address is not None else local,
                multihop=p.multihop,
            )
            for p in bgp.peers
        )
        return cls(str(bgp.router_id), bgp.asn, peers, graceful_restart_s)


def _quote(s: str) -> str:
    if any(c in s for c in '"\\\n\r;{}'):
        raise SpeakerError("BGP passwords must not contain quotes, backslashes, newlines, ';' or braces")
    return f'"{s}"'


def exabgp_config(cfg: SpeakerConfig, bridge_cmd: str) -> str:
    """The ExaBGP configuration text for a node."""
    lines = ["process routectl {", f"    run {bridge_cmd};", "    encoder json;", "}", ""]
    for p in cfg.peers:
        lines += [
            f"neighbor {p.address} {{",
            f"    router-id {cfg.router_id};",
            f"    local-address {p.local_address};",
            f"    local-as {cfg.local_asn};",
            f"    peer-as {p.asn};",
            f"    hold-time {p.hold_time};",
        ]
        if p.port != 179:
            lines.append(f"    connect {p.port};")
        if p.password is not None:
            lines.append(f"    md5-password {_quote(p.password)};")
        if p.multihop is not None:
            lines.append(f"    outgoing-ttl {p.multihop};")
        v6 = ":" in p.address
        lines += ["    family {", "        ipv6 unicast;" if v6 else "        ipv4 unicast;", "    }"]
        if cfg.graceful_restart_s > 0:
            # End-of-RIB only once routectl has decided (Speaker.mark_decided): the router keeps a
            # restarted speaker's stale routes until then, instead of flushing them at an early EoR.
            lines.append("    manual-eor true;")
            lines += ["    capability {", f"        graceful-restart {cfg.graceful_restart_s};", "    }"]
        lines += ["    api {", "        processes [ routectl ];", "        neighbor-changes;", "    }", "}", ""]
    return "\n".join(lines)


def _family_ok(peer: PeerSpec, vip: IP) -> bool:
    return (vip.version == 6) == (":" in peer.address)


def _attribute_parts(peer: PeerSpec, local_asn: int, attrs: BgpAttributes) -> list[str]:
    nh = str(attrs.next_hop) if attrs.next_hop is not None else "self"
    parts = [f"next-hop {nh}"]
    if attrs.med is not None:
        parts.append(f"med {attrs.med}")
    if attrs.local_pref is not None and peer.asn == local_asn:
        parts.append(f"local-preference {attrs.local_pref}")
    if attrs.communities:
        parts.append(f"community [ {' '.join(attrs.communities)} ]")
    if attrs.as_path_prepend:
        # ExaBGP sends a given AS path as is: on eBGP it must start with our own AS.
        n = attrs.as_path_prepend + (0 if peer.asn == local_asn else 1)
        parts.append(f"as-path [ {' '.join([str(local_asn)] * n)} ]")
    return parts


def route_command(peer: PeerSpec, local_asn: int, vip: IP, attrs: BgpAttributes | None) -> str | None:
    """The ExaBGP API command that announces (or, ``attrs`` None, withdraws) ``vip`` to ``peer``;
    None when the peer's address family does not carry the VIP."""
    if not _family_ok(peer, vip):
        return None
    prefix = f"{vip}/{vip.max_prefixlen}"
    if attrs is None:
        return f"neighbor {peer.address} withdraw route {prefix}"
    return " ".join([f"neighbor {peer.address} announce route {prefix}", *_attribute_parts(peer, local_asn, attrs)])


def announce_command(peer: PeerSpec, local_asn: int, vips: list[IP], attrs: BgpAttributes) -> str | None:
    """One command announcing every VIP of ``vips`` (same attributes) to ``peer``: ExaBGP's
    ``announce attributes ... nlri P1 P2 ...``; a single VIP uses ``announce route``."""
    ok = [v for v in vips if _family_ok(peer, v)]
    if not ok:
        return None
    if len(ok) == 1:
        return route_command(peer, local_asn, ok[0], attrs)
    nlri = " ".join(f"{v}/{v.max_prefixlen}" for v in ok)
    return " ".join(
        [f"neighbor {peer.address} announce attributes", *_attribute_parts(peer, local_asn, attrs), f"nlri {nlri}"]
    )


BATCH_MAX = 200
"""Most VIPs announced by one ExaBGP command."""


class Speaker:
    """Owns ExaBGP: start, restart with back-off, send route changes, report peer states."""

    def __init__(self, settings: RoutectlSettings, on_peer_change: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self._on_peer_change = on_peer_change
        self._cfg: SpeakerConfig | None = None
        self._desired: dict[IP, BgpAttributes] = {}
        self._sent: dict[IP, BgpAttributes] = {}
        self._wake = asyncio.Event()
        self._cfg_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn_q: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._acks: deque[asyncio.Future[bool]] = deque()
        self._token = secrets.token_hex(16)
        self._own_dir = settings.run_dir is None
        self.run_dir = settings.run_dir or Path(tempfile.mkdtemp(prefix="vgw-routectl-"))
        self.socket_path = self.run_dir / "api.sock"
        self._server: asyncio.AbstractServer | None = None
        self.peers: dict[str, str] = {}
        self._decided = False
        self._eor_due: set[str] = set()  # peers whose session came up and have had no End-of-RIB yet
        self.peer_since: dict[str, datetime] = {}
        """When each peer's session entered its current state (``vgwctl bgp``)."""
        self.connected = False
        self.synced = asyncio.Event()
        self._exa_tail: deque[str] = deque(maxlen=40)

    # -- public --

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_connect, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self._task = asyncio.create_task(self._supervise(), name="routectl-speaker")

    def mark_decided(self) -> None:
        """routectl has made its first decisions (set_route for each VIP): with graceful restart,
        End-of-RIB may now follow the routes."""
        if not self._decided:
            self._decided = True
            self._wake.set()

    async def _send_eor(self, cfg: SpeakerConfig) -> None:
        if cfg.graceful_restart_s <= 0 or not self._decided:
            return
        for peer in [p for p in cfg.peers if p.address in self._eor_due and self.peers.get(p.address) == "up"]:
            family = "ipv6 unicast" if ":" in peer.address else "ipv4 unicast"
            await self._command(f"neighbor {peer.address} announce eor {family}")
            self._eor_due.discard(peer.address)

    def configure(self, cfg: SpeakerConfig | None) -> None:
        if cfg != self._cfg:
            log.info("BGP configuration %s", "changed" if self._cfg is not None else "loaded")
            self._cfg = cfg
            self._cfg_changed.set()
            self._wake.set()

    def set_route(self, vip: IP, attrs: BgpAttributes | None) -> None:
        """Desire ``vip`` announced with ``attrs`` (None: withdrawn). Sent asynchronously."""
        if attrs is None:
            self._desired.pop(vip, None)
        else:
            self._desired[vip] = attrs
        self.synced.clear()
        self._wake.set()

    @property
    def config(self) -> SpeakerConfig | None:
        return self._cfg

    def announced_to(self, peer: PeerSpec) -> int:
        """VIPs ExaBGP has been told to announce to ``peer`` (it re-sends them on a new session)."""
        return sum(1 for vip in self._sent if _family_ok(peer, vip))

    @property
    def in_sync(self) -> bool:
        return self.connected and self._desired == self._sent

    async def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_sync:
                return True
            await asyncio.sleep(0.02)
        return self.in_sync

    async def stop(self, *, withdraw: bool, timeout: float = 3.0) -> None:
        """Withdraw every route (and wait, bounded, for ExaBGP to take it), then stop ExaBGP with a
        NOTIFICATION; with ``withdraw`` false (graceful restart), kill ExaBGP without one so peers
        keep the routes as stale."""
        if withdraw:
            for vip in list(self._desired):
                self.set_route(vip, None)
            if self.connected and not await self.wait_synced(timeout):
                log.warning("withdrawals not all acknowledged before shutdown; stopping ExaBGP anyway")
        self._stopping = True
        self._wake.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if withdraw:
                    proc.terminate()  # ExaBGP sends a NOTIFICATION (cease): peers drop its routes
                else:
                    proc.kill()  # no NOTIFICATION: graceful-restart peers keep the routes as stale
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- supervision --

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
        except (TimeoutError, OSError):
            writer.close()
            return
        if line.strip().decode(errors="replace") != self._token:
            log.warning("rejected a connection to the API socket with a wrong token")
            writer.close()
            return
        await self._conn_q.put((reader, writer))

    def _exabgp_cmd(self, conf: Path) -> list[str]:
        exe = self.settings.exabgp or str(Path(sys.executable).parent / "exabgp")
        return [
            sys.executable,
            str(HERE / "launch.py"),
            str(os.getpid()),
            self.settings.exabgp_netns or "-",
            exe,
            str(conf),
        ]

    def _exabgp_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "exabgp_daemon_daemonize": "false",
                "exabgp_daemon_drop": "false",
                # ExaBGP always switches to this user when started as root; a uid change would clear
                # PR_SET_PDEATHSIG, so it stays routectl's own user.
                "exabgp_daemon_user": pwd.getpwuid(os.getuid()).pw_name,
                "exabgp_api_cli": "false",
                "exabgp_api_ack": "true",
                "exabgp_api_terminate": "true",
                "exabgp_api_respawn": "false",
                "exabgp_api_encoder": "json",
                "exabgp_log_destination": "stdout",
                "exabgp_log_level": self.settings.exabgp_log_level.upper(),
                "exabgp_tcp_bind": "",
            }
        )
        return env

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            cfg = self._cfg
            self._cfg_changed.clear()
            if cfg is None:
                await self._cfg_changed.wait()
                continue
            started = time.monotonic()
            try:
                await self._run_once(cfg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:
                    log.warning("ExaBGP stopped: %s; last output: %s", exc, " | ".join(list(self._exa_tail)[-5:]))
            finally:
                await self._teardown()
            if self._stopping:
                return
            if self._cfg_changed.is_set():
                backoff = 0.5
                continue
            metrics.SPEAKER_RESTARTS.inc()
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 10.0)
            await asyncio.sleep(backoff)

    async def _teardown(self) -> None:
        self.connected = False
        metrics.SPEAKER_UP.set(0)
        self._sent = {}
        while self._acks:
            f = self._acks.popleft()
            if not f.done():
                f.set_exception(SpeakerError("ExaBGP went away"))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for peer in list(self.peers):
            self._set_peer(peer, "down")

    async def _run_once(self, cfg: SpeakerConfig) -> None:
        bridge = f"{sys.executable} {HERE / 'bridge.py'} {self.socket_path} {self._token}"
        conf = self.run_dir / "exabgp.conf"
        conf.write_text(exabgp_config(cfg, bridge))
        os.chmod(conf, 0o600)
        for p in cfg.peers:
            self._set_peer(p.address, "down")
        while not self._conn_q.empty():
            _r, w = self._conn_q.get_nowait()
            w.close()
        self._proc = await asyncio.create_subprocess_exec(
            *self._exabgp_cmd(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._exabgp_env(),
            cwd=str(self.run_dir),
        )
        log.info("ExaBGP started (pid %d) for %d peer(s)", self._proc.pid, len(cfg.peers))
        out_task = asyncio.create_task(self._pump_output(self._proc))
        exited = asyncio.create_task(self._proc.wait())
        try:
            got = asyncio.create_task(self._conn_q.get())
            done, _ = await asyncio.wait({got, exited}, timeout=20.0, return_when=asyncio.FIRST_COMPLETED)
            if got not in done:
                got.cancel()
                raise SpeakerError("ExaBGP exited or its API process did not connect")
            reader, self._writer = got.result()
            self.connected = True
            metrics.SPEAKER_UP.set(1)
            log.info("ExaBGP API connected")
            read_task = asyncio.create_task(self._read(reader))
            sync_task = asyncio.create_task(self._sync(cfg))
            changed = asyncio.create_task(self._cfg_changed.wait())
            try:
                done, _ = await asyncio.wait(
                    {exited, read_task, sync_task, changed}, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    if t is not exited and t.done() and not t.cancelled() and t.exception() is not None:
                        raise SpeakerError(str(t.exception()))
                if exited in done:
                    raise SpeakerError(f"ExaBGP exited with status {self._proc.returncode}")
                if self._cfg_changed.is_set():
                    log.info("restarting ExaBGP for the new BGP configuration")
            finally:
                for t in (read_task, sync_task, changed):
                    t.cancel()
        finally:
            await self._teardown()
            exited.cancel()
            await asyncio.gather(out_task, return_exceptions=True)

    async def _pump_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self._exa_tail.append(text)
            exa_log.debug("%s", text)

    # -- the API conversation --

    def _set_peer(self, peer: str, state: str) -> None:
        old = self.peers.get(peer)
        self.peers[peer] = state
        if old != state:
            self.peer_since[peer] = datetime.now(UTC)
        metrics.PEER_UP.labels(peer).set(1 if state == "up" else 0)
        if state == "up" and old != state:
            self._eor_due.add(peer)
            self._wake.set()
        if old != state:
            if old is not None:
                log.info("BGP peer %s %s", peer, state, extra={"peer": peer, "peer_state": state})
            if self._on_peer_change is not None:
                self._on_peer_change()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise SpeakerError("ExaBGP API connection closed")
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            if text in ("done", "error", "shutdown"):
                self._ack(text == "done", text)
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                log.debug("unparsed ExaBGP output: %s", text[:200])
                continue
            if not isinstance(msg, dict):
                continue
            if "answer" in msg:
                self._ack(msg.get("answer") == "done", str(msg.get("answer")))
            elif msg.get("type") == "state":
                nb = msg.get("neighbor") or {}
                addr = (nb.get("address") or {}).get("peer")
                state = nb.get("state")
                if isinstance(addr, str) and isinstance(state, str):
                    self._set_peer(addr, "up" if state == "up" else "down" if state == "down" else state)

    def _ack(self, ok: bool, text: str) -> None:
        if not self._acks:
            log.debug("unexpected ExaBGP answer %r", text)
            return
        f = self._acks.popleft()
        if not f.done():
            f.set_result(ok)

    async def _command(self, cmd: str) -> bool:
        if self._writer is None:
            raise SpeakerError("not connected")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks.append(fut)
        start = time.perf_counter()
        self._writer.write(cmd.encode() + b"\n")
        await self._writer.drain()
        try:
            ok = await asyncio.wait_for(fut, self.settings.command_timeout_s)
        except TimeoutError:
            raise SpeakerError(f"no acknowledgement for {cmd!r} in {self.settings.command_timeout_s}s") from None
        metrics.COMMAND_SECONDS.observe(time.perf_counter() - start)
        if not ok:
            metrics.COMMAND_ERRORS.inc()
            log.error("ExaBGP rejected %r", cmd)
        return ok

    async def _sync(self, cfg: SpeakerConfig) -> None:
        while True:
            self._wake.clear()
            changed = [(v, a) for v, a in self._desired.items() if self._sent.get(v) != a] + [
                (v, None) for v in self._sent if v not in self._desired
            ]
            # Announcements with equal attributes go in one command (up to BATCH_MAX VIPs).
            groups: dict[str, tuple[BgpAttributes, list[IP]]] = {}
            for vip, attrs in changed:
                if attrs is not None:
                    groups.setdefault(attrs.model_dump_json(), (attrs, []))[1].append(vip)
            for attrs, vips in groups.values():
                for i in range(0, len(vips), BATCH_MAX):
                    chunk = vips[i : i + BATCH_MAX]
                    for peer in cfg.peers:
                        cmd = announce_command(peer, cfg.local_asn, chunk, attrs)
                        if cmd is not None:
                            await self._command(cmd)
                    for vip in chunk:
                        self._sent[vip] = attrs
            for vip, attrs in changed:
                if attrs is None:
                    for peer in cfg.peers:
                        cmd = route_command(peer, cfg.local_asn, vip, None)
                        if cmd is not None:
                            await self._command(cmd)
                    self._sent.pop(vip, None)
            await self._send_eor(cfg)
            if self._desired == self._sent:
                self.synced.set()
                await self._wake.wait()
