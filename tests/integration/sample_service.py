"""A small service on the vgw runtime, for testing the runtime itself: for each backend.down it
withdraws the VIP on its node (a caricature of routectl) and logs what it did."""

import logging

from vgw.bus import Received, Subscription
from vgw.events import BackendDown, VipWithdraw
from vgw.runtime import Runtime, run
from vgw.settings import VgwSettings

log = logging.getLogger("sample")


class SampleSettings(VgwSettings):
    node_id: str = "node-a"


class Sample:
    def __init__(self, settings: SampleSettings) -> None:
        self.settings = settings
        self.sub: Subscription | None = None

    async def start(self, rt: Runtime[SampleSettings]) -> None:
        bus = rt.bus

        async def on_down(r: Received) -> None:
            assert isinstance(r.event, BackendDown)
            log.info("withdrawing %s", r.event.vip, extra={"cause": r.meta.id})
            await bus.publish(
                VipWithdraw(
                    node=self.settings.node_id,
                    vip=r.event.vip,
                    state="withdrawn",
                    reason="below_low_watermark",
                    cause_event_id=r.meta.id,
                )
            )

        self.sub = await bus.subscribe(on_down, types=[BackendDown])

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()


if __name__ == "__main__":
    run("sample", Sample, SampleSettings)
