"""The forwarder's preStop (dataplane.shim.fwdprestop): it returns only once nothing answers at route
control's endpoint any more -- any HTTP answer, a stopping service's 503 too, means "still there" --
and gives up (exit 1) at its bound."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from dataplane.shim.fwdprestop import main, routectl_running


class _Stopping(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)  # what a service says while it shuts down
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Stopping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_stopping_service_still_counts_as_running(endpoint: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{endpoint.server_port}/healthz"
    assert routectl_running(url)
    endpoint.shutdown()
    endpoint.server_close()
    assert not routectl_running(url)


def test_waits_until_the_endpoint_closes(endpoint: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{endpoint.server_port}/healthz"
    hook = subprocess.Popen([sys.executable, "-m", "dataplane.shim.fwdprestop", "--url", url, "--timeout", "30"])
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # it must keep waiting while the endpoint answers
            assert hook.poll() is None
            time.sleep(0.05)
        closed_at = time.monotonic()
        endpoint.shutdown()
        endpoint.server_close()
        assert hook.wait(timeout=10) == 0
        assert time.monotonic() - closed_at < 5
    finally:
        if hook.poll() is None:
            hook.kill()
            hook.wait()


def test_gives_up_at_its_bound(endpoint: http.server.HTTPServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{endpoint.server_port}/healthz"
    t0 = time.monotonic()
    assert main(["--url", url, "--timeout", "0.5"]) == 1
    assert 0.5 <= time.monotonic() - t0 < 5
    assert "still answers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--url", url, "--timeout", "0"])
    assert exc.value.code == 2
