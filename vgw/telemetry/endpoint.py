"""The HTTP endpoint every VGW process serves: ``/metrics`` (Prometheus), ``/healthz`` (the process
is alive) and ``/readyz`` (it can do its job: every readiness check passes).

It runs on its own thread so a busy or stuck event loop still answers ``/healthz`` and metrics;
readiness checks must therefore only read state (they run on that thread).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


class Health:
    """Liveness and readiness of a process, as the endpoint reports them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._started = False
        self._stopping = False

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def set_started(self) -> None:
        with self._lock:
            self._started = True

    def set_stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def readiness(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            checks = dict(self._checks)
            report = {"started": "ok" if self._started else "starting"}
            if self._stopping:
                report["shutdown"] = "stopping"
        ready = self._started and not self._stopping
        for name, check in checks.items():
            try:
                ok, why = check()
            except Exception as exc:  # a broken check means not ready, never a crash
                ok, why = False, f"check failed: {exc}"
            report[name] = "ok" if ok else why
            ready = ready and ok
        return ready, report


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); port 0 picks a free one."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    def __init__(self, addr: str, health: Health, registry: CollectorRegistry = REGISTRY) -> None:
        self._addr = parse_addr(addr)
        self._health = health
        self._registry = registry
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> MetricsEndpoint:
        health, registry = self._health, self._registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    self._send(200, "application/json", b'{"status":"ok"}')
                elif path == "/readyz":
                    ready, report = health.readiness()
                    body = json.dumps({"status": "ready" if ready else "not ready", "checks": report})
                    self._send(200 if ready else 503, "application/json", body.encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the service's own logs

        self._server = ThreadingHTTPServer(self._addr, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
