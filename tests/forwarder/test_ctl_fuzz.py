"""Hostile input on vgw-fwd's control socket, at volume (a real forwarder on ring vdevs).

Hundreds of mutated documents (byte flips, insertions of control and non-ASCII bytes, truncations,
duplicated and shuffled lines, huge numbers) go through APPLY and DELTA, and random frames through
the raw socket. After every request the forwarder must answer, and after every rejected one its
state must be exactly what it was.
"""

from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path

from vgw.fwdctl import APPLY, FwdClient, FwdError, frame
from vgw.fwdctl import DELTA as DELTA_TYPE

BASE = """vgw-config 1
generation {gen}
timeout tcp_established 120
service web tcp 192.0.2.10 80 maglev table=251 toa=on timeout.tcp_syn_recv=10
lip web 198.18.0.100
backend web 198.18.0.11 80 100 active
backend web 198.18.0.12 80 50 draining
service dns udp 192.0.2.10 53 wlc
lip dns 198.18.0.100
backend dns 198.18.0.21 53 1 active
end
"""

DELTA = """vgw-delta 1
generation {gen}
backend add web 198.18.0.13 80 10 active
backend state web 198.18.0.12 80 active
lip add dns 198.18.0.101
end
"""


def mutate(rng: random.Random, doc: str) -> bytes:
    b = bytearray(doc.encode())
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[pos] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = bytes([rng.choice([0, 9, 13, 127, 0xC3, 0xFF, 32])])
        elif op == 2:
            del b[pos:]
        elif op == 3:
            lines = bytes(b).split(b"\n")
            rng.shuffle(lines)
            b = bytearray(b"\n".join(lines))
        elif op == 4:
            lines = bytes(b).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            b = bytearray(b"\n".join(lines))
        elif op == 5:
            b[pos:pos] = rng.choice([b"99999999999999999999", b"-1", b"0", b"4294967296", b" x" * 20, b"#"])
        else:
            b[pos:pos] = b"A" * rng.choice([600, 70000])
    return bytes(b)


async def test_mutated_documents_and_random_frames(ring_fwd: Path) -> None:
    rng = random.Random(2026)
    c = FwdClient(str(ring_fwd), timeout_s=10)
    accepted = rejected = 0
    try:
        gen = await c.apply(BASE.format(gen=1))
        for i in range(400):
            before = await c.config()
            kind = rng.choice(["apply", "delta"])
            doc = (BASE if kind == "apply" else DELTA).format(gen=gen + 1)
            payload = mutate(rng, doc)
            try:
                # raw bytes (not str): the forwarder must see exactly the mutated payload
                new_gen = await c.request(APPLY if kind == "apply" else DELTA_TYPE, payload)
                gen = int(new_gen.split()[1])
                accepted += 1
            except FwdError:
                rejected += 1
                assert await c.config() == before, f"rejected request {i} changed the state"
            if i % 50 == 0:  # and raw garbage frames on separate connections
                await raw_garbage(ring_fwd, rng)
        hello = await c.hello()
        assert hello["generation"] == gen
        stats = await c.stats()
        assert stats["counters"]["ctl_ctl_errors"] >= rejected
    finally:
        await c.close()
    print(f"{accepted} mutated documents accepted (still valid), {rejected} rejected")
    assert rejected > 300


async def raw_garbage(sock: Path, rng: random.Random) -> None:
    for data in (
        bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
        struct.pack("!4sBBHII", b"VGWC", 1, rng.randrange(256), rng.randrange(65536), rng.randrange(1 << 32), 1),
        frame(rng.choice([1, 4, 5, 6]), b"x" * rng.randint(0, 5000)),
        frame(2, b"")[: rng.randint(1, 15)],  # a truncated header, then hang up
    ):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(data)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(65536), 0.5)
        except TimeoutError:
            pass  # a partial frame: the forwarder waits for the rest, we hang up
        writer.close()
