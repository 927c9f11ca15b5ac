"""Helpers shared by vgwctl commands."""

from __future__ import annotations

import os
import sys

from vgw.bus import Bus
from vgw.settings import VgwSettings, load_settings


def settings_from(nats_url: str | None) -> VgwSettings:
    if nats_url:
        os.environ["VGW_NATS_URL"] = nats_url
    return load_settings(VgwSettings)


def fail(message: str, code: int) -> int:
    print(f"vgwctl: {message}", file=sys.stderr)
    return code


async def connect(settings: VgwSettings) -> Bus:
    """Connect once; the caller turns a failure into exit code 3."""
    bus = Bus(
        settings.nats_options(),
        source=f"/vgw/vgwctl/{settings.instance_id}",
        identity=settings.nats_identity,
        js_replicas=settings.js_replicas,  # as the services: a stream vgwctl creates gets the same replicas
    )
    await bus.connect()
    return bus
