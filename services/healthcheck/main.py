"""vgw-healthcheck: the health-checking service on the vgw runtime (docs/healthcheck.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from vgw.config import ConfigDocument
from vgw.config.store import ConfigReader
from vgw.runtime import Runtime, run
from vgw.settings import VgwSettings

from .checker import HealthChecker


class HealthcheckSettings(VgwSettings):
    metrics_addr: str = "127.0.0.1:9102"
    hc_heartbeat_s: float = Field(
        default=1.0, ge=0.1, le=60, description="Membership heartbeat; a dead instance's checks move within 3 of them"
    )
    hc_members_bucket: str = Field(default="vgw_hc_members", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    hc_netns: str | None = Field(
        default=None, description="Probe from this network namespace (e.g. one on the backends' network)"
    )


class HealthcheckApp:
    def __init__(self, settings: HealthcheckSettings) -> None:
        self.settings = settings
        self.checker: HealthChecker | None = None

    async def start(self, rt: Runtime[HealthcheckSettings]) -> None:
        reader = await ConfigReader(rt.bus, recheck=self.settings.config_recheck).open()

        async def feed() -> AsyncIterator[tuple[int, ConfigDocument]]:
            async for cr in reader.watch():
                yield cr.revision, cr.document

        self.checker = HealthChecker(
            rt.bus,
            self.settings.instance_id,
            feed,
            heartbeat_s=self.settings.hc_heartbeat_s,
            members_bucket=self.settings.hc_members_bucket,
            netns=self.settings.hc_netns,
            supervisor=rt.supervisor,
        )
        await self.checker.start()
        checker = self.checker
        rt.health.add_check("config", lambda: (checker.revision is not None, "no config revision read yet"))

    async def stop(self) -> None:
        if self.checker is not None:
            await self.checker.stop()


def main() -> None:
    run("healthcheck", HealthcheckApp, HealthcheckSettings)


if __name__ == "__main__":
    main()
