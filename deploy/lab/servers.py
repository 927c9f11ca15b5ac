"""What runs in the lab's namespaces besides VGW: backend servers and the router's BIRD."""

from __future__ import annotations

from .plan import NODES, ROUTER_ASN, ROUTER_EXT

# One process per backend: HTTP on 8080 (``/healthz`` says ok, every other path names the backend),
# a UDP responder on 53, a TCP listener on 8443 and a streaming TCP echo on 9000 (a thread per
# connection: first a banner line ``vgw-echo <backend> <peer address>:<port>``, the peer being the
# LIP of the node that carries the connection, then every byte back as it comes; the long-lived
# scenarios' echo-tcp service), as docs/config-example.yaml expects.
BACKEND = r"""
import http.server, socket, socketserver, sys, threading
name = sys.argv[1]
ECHO_PORT = 9000

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"ok\n" if self.path.startswith("/healthz") else f"{name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data[:2] + b"\x81\x80" + data[4:], addr)

def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8443))
    s.listen(128)
    while True:
        c, _ = s.accept()
        c.close()

def echo_one(c, peer):
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(f"vgw-echo {name} {peer[0]}:{peer[1]}\n".encode())
        while data := c.recv(65536):
            c.sendall(data)
    except OSError:
        pass
    finally:
        c.close()

def echo():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", ECHO_PORT))
    s.listen(1024)
    while True:
        c, peer = s.accept()
        threading.Thread(target=echo_one, args=(c, peer), daemon=True).start()

threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=echo, daemon=True).start()
S(("0.0.0.0", 8080), H).serve_forever()
"""


def bird_config(node_asn: int) -> str:
    peers = "\n".join(
        f"protocol bgp {node_id.replace('-', '_')} from vgw {{ neighbor {addr} as {node_asn}; }}"
        for node_id, addr in NODES.values()
    )
    return f"""
log stderr all;
router id {ROUTER_EXT};
protocol device {{ scan time 10; }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths yes;
}}
template bgp vgw {{
    local {ROUTER_EXT} as {ROUTER_ASN};
    ipv4 {{ import all; export none; }};
    connect retry time 2;
    error wait time 1, 4;
}}
{peers}
"""
