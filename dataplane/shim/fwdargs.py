"""vgw-fwd's settings file for one node, from the config document (the node's ports, routes and forwarder).

The forwarder takes its ports, addresses, routes, workers, connection capacity and memory budget
at start (they need a restart to change); the config model (``nodes[]``, with its ``forwarder``
section) is their source of truth, so deployment renders them from it:

    python -m dataplane.shim.fwdargs --config docs/config-example.yaml --node node-a \\
        --ext net_af_packet0 --int net_af_packet1 > /etc/vgw/fwd.conf
    vgw-fwd <EAL options> -- --config /etc/vgw/fwd.conf

Device names default to each port's ``device`` field; ``--ext``/``--int`` override them (the DPDK
device name, e.g. a PCI address or ``net_af_packet0``).
"""

from __future__ import annotations

import argparse
import sys

from vgw.config import ConfigDocument, Node, PortConfig


def render_settings(
    node: Node, ext_device: str | None = None, int_device: str | None = None, socket: str | None = None
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
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from vgw.config.validate import ConfigInvalid, load_document

    ap = argparse.ArgumentParser(prog="python -m dataplane.shim.fwdargs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="config document (YAML or JSON)")
    ap.add_argument("--node", required=True)
    ap.add_argument("--ext", help="DPDK device of the external port")
    ap.add_argument("--int", dest="int_", help="DPDK device of the internal port")
    ap.add_argument("--socket", help="control socket path")
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
        sys.stdout.write(render_settings(node, args.ext, args.int_, args.socket))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
