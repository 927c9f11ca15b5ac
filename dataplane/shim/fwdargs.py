"""vgw-fwd's settings file for one node, from the config document (the node's ports, routes and forwarder).

The forwarder takes its ports, addresses, routes, workers, connection capacity and memory budget
at start (they need a restart to change); the config model (``nodes[]``, with its ``forwarder``
section) is their source of truth, so every deployment renders them from it with ``vgw-fwd-config``
(this module; ``python -m dataplane.shim.fwdargs`` is the same program):

    vgw-fwd-config --config docs/config-example.yaml --node node-a \\
        --ext net_af_packet0 --int net_af_packet1 -o /run/vgw/fwd.conf     # from a file
    VGW_NODE_ID=node-a vgw-fwd-config --from-nats -o /run/vgw/fwd.conf     # from the config store
    vgw-fwd <EAL options> -- --config /run/vgw/fwd.conf

Device names default to each port's ``device`` field; ``--ext``/``--int`` override them (the DPDK
device name, e.g. a PCI address or ``net_af_packet0``), and a ``--devices`` map overrides those for
the nodes it names (one Helm value for a whole fleet). When the node's cluster syncs connections
(``clusters[].conn_sync``), the other nodes of the cluster become ``sync-peer`` lines and
``--sync-key-file`` names the cluster's shared key (docs/forwarder.md, "Connection sync"). The
node's LIPs are listed as a comment: the shim programs them, with the rest of the node's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from vgw.config import ConfigDocument, Node, PortConfig
from vgw.settings import VgwSettings, describe_errors

from . import fwdsource
from .fwdsource import GaveUp, SourceError

DEFAULT_WAIT_S = 300.0
DEFAULT_SYNC_KEY_FILE = "/etc/vgw/conn-sync.key"


def sync_settings(doc: ConfigDocument, node: Node, key_file: str = DEFAULT_SYNC_KEY_FILE) -> list[str]:
    """Connection-sync lines for node: every other node of its cluster is a peer, at the address of
    the port the forwarder syncs on (internal, or external in single-arm mode). Nothing when the
    cluster does not sync."""
    cluster = doc.cluster(node.cluster)
    if cluster is None or not cluster.conn_sync.enabled:
        return []
    out = [f"sync-port {cluster.conn_sync.port}", f"sync-key-file {key_file}"]
    for other in doc.nodes:
        port = other.internal if other.mode == "dual_arm" else other.external
        if other.id != node.id and other.cluster == node.cluster and port is not None:
            out.append(f"sync-peer {port.address.ip}")
    return out


def render_settings(
    node: Node,
    ext_device: str | None = None,
    int_device: str | None = None,
    socket: str | None = None,
    sync: list[str] | None = None,
    origin: str = "the config document",
) -> str:
    def dev(port: PortConfig, override: str | None, role: str) -> str:
        name = override or port.device
        if not name:
            raise ValueError(f"node {node.id}: no DPDK device for the {role} port (set `device` or pass --{role})")
        return name

    out = [f"# vgw-fwd settings for node {node.id}, rendered by vgw-fwd-config from {origin}"]
    out.append(f"mode {'single-arm' if node.mode == 'single_arm' else 'dual-arm'}")
    out.append(f"ext {dev(node.external, ext_device, 'ext')} {node.external.address.with_prefixlen}")
    if node.mode == "dual_arm" and node.internal is not None:
        out.append(f"int {dev(node.internal, int_device, 'int')} {node.internal.address.with_prefixlen}")
    mtu = node.backend_port.mtu
    out.append(f"mtu {mtu}")
    fwd = node.forwarder
    out.append(f"workers {fwd.workers}")
    out.append(f"conn-capacity {fwd.conn_capacity}")
    out.append(f"memory-budget {fwd.memory_budget}")
    if node.external.gateway is not None:
        out.append(f"route 0.0.0.0/0 {node.external.gateway} ext")
    if node.mode == "dual_arm" and node.internal is not None and node.internal.gateway is not None:
        # routes are per port in vgw-fwd: each port can have its own default
        out.append(f"route 0.0.0.0/0 {node.internal.gateway} int")
    for r in node.routes:
        if r.prefix.version != 4:
            continue
        role = "ext" if r.port == "external" or node.mode == "single_arm" else "int"
        out.append(f"route {r.prefix.with_prefixlen} {r.via} {role}")
    if socket:
        out.append(f"socket {socket}")
    lips = node.lips()
    if lips:
        out.append(f"# lips {' '.join(map(str, lips))} (programmed by the shim, not read from this file)")
    out.extend(sync or [])
    return "\n".join(out) + "\n"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vgw-fwd-config",
        description="Render one node's vgw-fwd settings file (ports, addresses, routes, sync peers) from the "
        "config document: a file, or the config store over NATS (docs/forwarder.md, 'Settings from the config').",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="FILE", help="the config document (YAML or JSON)")
    src.add_argument(
        "--from-nats",
        action="store_true",
        help="the current revision of the config store (KV vgw_config), with the VGW_NATS_* settings",
    )
    ap.add_argument(
        "--nats-env",
        metavar="FILE",
        help="with --from-nats: VGW_* settings from FILE too (an identity's vgw.env); ignored with --config",
    )
    ap.add_argument("--node", help="the node's id (nodes[].id); default $VGW_NODE_ID")
    ap.add_argument("--ext", metavar="DEV", help="DPDK device of the external port")
    ap.add_argument("--int", dest="int_", metavar="DEV", help="DPDK device of the internal port")
    ap.add_argument(
        "--devices", metavar="FILE", help="per-node devices {node id: {ext: DEV, int: DEV}}; beats --ext/--int"
    )
    ap.add_argument("--socket", help="control socket path (a `socket` line)")
    ap.add_argument(
        "--sync-key-file",
        default=DEFAULT_SYNC_KEY_FILE,
        help=f"the cluster's connection-sync key, when its cluster syncs (default {DEFAULT_SYNC_KEY_FILE})",
    )
    ap.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"with --from-nats: how long to wait for NATS and the config (default {DEFAULT_WAIT_S:.0f}; 0: once)",
    )
    ap.add_argument("-o", "--output", metavar="FILE", help="write FILE atomically (default: stdout)")
    return ap


def _say(msg: str) -> None:
    print(f"vgw-fwd-config: {msg}", file=sys.stderr, flush=True)


def _nats_settings(env_file: str | None) -> VgwSettings:
    if env_file is not None and not Path(env_file).is_file():
        raise SourceError(f"--nats-env {env_file}: no such file")
    try:
        # the environment wins over the file (pydantic-settings), as systemd's Environment= would
        return VgwSettings(_env_file=env_file)
    except ValidationError as exc:
        raise SourceError("; ".join(describe_errors(VgwSettings, exc))) from exc


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    node_id = args.node or os.environ.get("VGW_NODE_ID", "")
    if not node_id:
        ap.error("no node: pass --node ID or set VGW_NODE_ID")
    if args.wait < 0:
        ap.error("--wait must be >= 0")
    try:
        if args.from_nats:
            # the bus logs every failed connect; the progress lines already say what is awaited
            logging.basicConfig(format="vgw-fwd-config: %(message)s", level=logging.ERROR)
            settings = _nats_settings(args.nats_env)
            loaded = asyncio.run(fwdsource.from_store(settings, node_id, args.wait, _say))
        else:
            loaded = fwdsource.from_file(args.config)
        node = loaded.doc.node(node_id)
        if node is None:
            raise SourceError(f"no node {node_id!r} in {loaded.origin}")
        ext, int_ = args.ext, args.int_
        if args.devices:
            per_node = fwdsource.load_devices(args.devices, node_id)
            ext, int_ = per_node[0] or ext, per_node[1] or int_
        sync = sync_settings(loaded.doc, node, args.sync_key_file)
        text = render_settings(node, ext, int_, args.socket, sync, origin=loaded.origin)
    except (SourceError, ValueError) as exc:
        _say(f"error: {exc}")
        return 2
    except GaveUp as exc:
        _say(f"error: {exc}")
        return 1
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomically(Path(args.output), text)
    except OSError as exc:
        _say(f"error: cannot write {args.output}: {exc}")
        return 2
    _say(f"wrote {args.output} for node {node_id} from {loaded.origin}")
    return 0


def write_atomically(path: Path, text: str) -> None:
    """A temp file beside ``path``, flushed to disk, then renamed over it: a reader (or a crash) sees
    the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
