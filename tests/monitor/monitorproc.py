"""A real vgw-monitor process for the monitor suites, with its /metrics on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.support.nats_server import free_port

REPO = Path(__file__).resolve().parents[2]


class MonitorProcess:
    """``python -m services.monitor.main`` as instance ``instance``, its output to log. It judges
    every 0.2 s (the tests wait for its verdicts) and exports no traces; settings add VGW_* settings
    or override these."""

    def __init__(self, nats_url: str, instance: str, log: Path, settings: Mapping[str, str]) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "OTEL_"))}
        env |= {
            "PYTHONPATH": str(REPO), "VGW_NATS_URL": nats_url, "VGW_INSTANCE_ID": instance,
            "VGW_METRICS_ADDR": f"127.0.0.1:{self.port}", "VGW_MONITOR_JUDGE_INTERVAL_S": "0.2",
            "OTEL_TRACES_EXPORTER": "none", **settings,
        }  # fmt: skip
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.monitor.main"], env=env, cwd=str(REPO), stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
