"""A real nats-server run from the configuration ``vgwctl security init`` generated.

Always stopped by the fixture that owns it, also when a test fails.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.nats_server import NATS_SERVER, NatsServer
from vgw.settings import VgwSettings


class SecureNats(NatsServer):
    """The generated ``nats-server.conf`` as is (TLS, the matrix, JetStream); only the monitoring port
    (to know when JetStream is up) and the log are added on the command line."""

    def __init__(self, secdir: Path, port: int) -> None:
        super().__init__(secdir)
        self.secdir = secdir
        self.port = port

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.secdir / "nats" / "nats-server.conf"
        return [NATS_SERVER, "-c", str(conf), "-m", str(self.monitor_port), "-l", str(self.log_file)]

    def log_tail(self, n: int = 4000) -> str:
        return self._log_tail(n)

    def settings(self, identity: str) -> VgwSettings:
        """What a VGW process of this identity builds from its vgw.env (and nothing else)."""
        env = self.secdir / "identities" / identity / "vgw.env"
        return VgwSettings(_env_file=str(env), instance_id=identity)
