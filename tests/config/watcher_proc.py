"""A separate watcher process: follows the config store with ConfigReader.watch() and prints one
JSON line per revision it sees, with a fingerprint of the whole document (used by the atomicity
test and the benchmark)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vgw.bus import Bus
from vgw.config.store import ConfigReader


async def main(url: str, bucket: str, light: bool) -> None:
    bus = Bus({"servers": [url], "reconnect_time_wait": 0.2}, source="/vgw/tests/watcher")
    await bus.connect()
    # as the services follow it: re-checking every revision unless VGW_CONFIG_RECHECK=false (to measure its cost)
    reader = await ConfigReader(bus, bucket, recheck=os.environ.get("VGW_CONFIG_RECHECK", "true") != "false").open()
    print(json.dumps({"ready": True}), flush=True)
    async for rev in reader.watch():
        t = time.time()
        doc = rev.document
        if light:  # counts only (the benchmark): no per-backend work between revisions
            services = sum(len(v.services) for v in doc.vips)
            backends = sum(len(s.backends) for v in doc.vips for s in v.services)
            print(
                json.dumps({"revision": rev.revision, "t": t, "services": services, "backends": backends}), flush=True
            )
            continue
        weights = sorted({b.weight for _, s in doc.services() for b in s.backends})
        states = sorted({b.state for _, s in doc.services() for b in s.backends})
        services = sum(len(v.services) for v in doc.vips)
        backends = sum(len(s.backends) for _, s in doc.services())
        reason = rev.manifest.reason if rev.manifest else ""
        print(
            json.dumps(
                {
                    "revision": rev.revision,
                    "t": t,
                    "services": services,
                    "backends": backends,
                    "weights": weights,
                    "states": states,
                    "reason": reason,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "vgw_config", "light" in sys.argv[3:]))
