"""A subscriber that knows nothing of VGW: plain nats-py and the CloudEvents SDK only.

Usage: python ce_consumer.py NATS_URL SUBJECT
Prints READY once subscribed, then one JSON line per the first event received, and exits.
"""

import asyncio
import json
import sys

import nats
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event


async def main(url: str, subject: str) -> None:
    nc = await nats.connect(url)
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        # CloudEvents binary mode over NATS uses the same ce-* header convention as HTTP binary
        # mode, so the SDK's HTTP binary reader decodes it.
        event = from_binary_event(HTTPMessage(headers=dict(msg.headers or {}), body=msg.data))
        out = {
            "specversion": event.get_specversion(),
            "type": event.get_type(),
            "id": event.get_id(),
            "source": event.get_source(),
            "time": event.get_time().isoformat() if event.get_time() else None,
            "subject": event.get_subject(),
            "datacontenttype": event.get_datacontenttype(),
            "data": event.get_data(),
            "traceparent": (msg.headers or {}).get("traceparent"),
        }
        if not got.done():
            got.set_result(json.dumps(out))

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    print("READY", flush=True)
    print(await asyncio.wait_for(got, 30), flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
