"""vgw-fwd's settings file for one node, from the config document (the node's ports, routes and forwarder).

The forwarder takes its ports, addresses, routes, workers, connection capacity and memory budget
at start (they need a restart to change); the config model (``nodes[]``, with its ``forwarder``
section) is their source of truth, so deployment renders them from it:

    python -m dataplane.shim.fwdargs --config docs/config-example.yaml --node node-a \\
        --ext net_af_packet0 --int net_af_packet1 > /etc/vgw/fwd.conf
    vgw-fwd <EAL options> -- --config /etc/vgw/fwd.conf

Device names default to each port's ``device`` field; ``--ext``/``--int`` override them (the DPDK
device name, e.g. a PCI address or ``net_af_packet0``). When the node's cluster syncs connections
(``clusters[].conn_sync``), the other nodes of the cluster become ``sync-peer`` lines and
``--sync-key-file`` names the cluster's shared key (docs/forwarder.md, "Connection sync").
"""

from __future__ import annotations

import argparse
import sys

from vgw.config import ConfigDocument, Node, PortConfig

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
) -> str:
    def dev(port: PortConfig, override: str | None, role: str) -> str:
        name = override or port.device
        if not name:
            raise ValueError(f"node {node.id}: no DPDK device for the {role} port (set `device` or pass --{role})")
        return name

    out = [f"# vgw-fwd settings for node {node.id} (rendered from the config document)"]
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
    out.extend(sync or [])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from vgw.config.validate import ConfigInvalid, load_document

    ap = argparse.ArgumentParser(prog="python -m dataplane.shim.fwdargs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="config document (YAML or JSON)")
    ap.add_argument("--node", required=True)
    ap.add_argument("--ext", help="DPDK device of the external port")
    ap.add_argument("--int", dest="int_", help="DPDK device of the internal port")
    ap.add_argument("--socket", help="control socket path")
    ap.add_argument(
        "--sync-key-file",
        default=DEFAULT_SYNC_KEY_FILE,
        help=f"the cluster's connection-sync key, when its cluster syncs (default {DEFAULT_SYNC_KEY_FILE})",
    )
    args = ap.parse_args(argv)
    try:
        with open(args.config, "rb") as f:
            doc: ConfigDocument = load_document(f.read())
    except (OSError, ConfigInvalid) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = doc.node(args.node)
    if node is None:
        print(f"error: no node {args.node!r} in {args.config}", file=sys.stderr)
        return 2
    try:
        sync = sync_settings(doc, node, args.sync_key_file)
        sys.stdout.write(render_settings(node, args.ext, args.int_, args.socket, sync))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
