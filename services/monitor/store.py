"""The monitor's KV bucket (layout in :mod:`vgw.monitoring`)."""

from __future__ import annotations

from vgw.bus import Bus
from vgw.monitoring import MONITOR_BUCKET, OBS_BUCKET, ActiveRequest, PathObservation, VipView, obs_key
from vgw.store import KvStore

OBS_TTL_S = 60.0  # a vantage point gone this long is forgotten


class MonitorStore:
    def __init__(
        self, observations: KvStore[PathObservation], views: KvStore[VipView], requests: KvStore[ActiveRequest]
    ) -> None:
        self.observations, self.views, self.requests = observations, views, requests

    @classmethod
    async def open(cls, bus: Bus) -> MonitorStore:
        # Observations expire with their vantage point (bucket TTL); views and requests must not:
        # a request lives as long as its own expires_at says.
        obs = await KvStore.open(bus, OBS_BUCKET, PathObservation, ttl_s=OBS_TTL_S)
        views = await KvStore.open(bus, MONITOR_BUCKET, VipView)
        return cls(obs, views, KvStore(bus, MONITOR_BUCKET, ActiveRequest))

    @staticmethod
    def obs_key(o: PathObservation) -> str:
        return obs_key(o.vip, o.port, o.path, o.vantage)

    async def put_observation(self, o: PathObservation) -> None:
        await self.observations.put(self.obs_key(o), o)

    async def put_view(self, key: str, view: VipView) -> None:
        await self.views.put(key, view)

    async def put_request(self, key: str, req: ActiveRequest | None) -> None:
        if req is None:
            await self.requests.delete(key)
        else:
            await self.requests.put(key, req)

    async def active_requests(self) -> dict[str, ActiveRequest]:
        return await self.requests.snapshot("req.>")
