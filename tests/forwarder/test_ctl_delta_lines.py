"""Every malformed delta line against a forwarding vgw-fwd (real DPDK, af_packet, namespaces).

For each operation of the ``vgw-delta 1`` grammar, every shorter form of a valid line, a longer
one, the line duplicated, and the line out of order (before the header or the generation, after
``end``, before the service it names exists) goes through DELTA. Each one must get an error reply
that names its line; the applied configuration and generation must not move; and the forwarder
must keep forwarding HTTP through the VIP meanwhile. Valid deltas afterwards still apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.topology import BACKEND_IPS, LIP, VIP, Topology, http_requests
from vgw.fwdctl import FwdClient, FwdError

pytestmark = needs_lab

LIP2 = "198.18.0.101"
BASE = "\n".join(
    [
        "vgw-config 1",
        "generation {gen}",
        f"service web tcp {VIP} 80 wrr toa=on",
        f"lip web {LIP}",
        f"lip web {LIP2}",
        *[f"backend web {ip} 80 100 active" for ip in BACKEND_IPS],
        f"service api tcp {VIP} 8080 maglev table=251",
        f"lip api {LIP}",
        f"backend api {BACKEND_IPS[0]} 80 1 active",
        "end",
        "",
    ]
)

# Valid operations on BASE, each alone in a delta.
GOOD = [
    "backend add web 198.18.0.14 80 100 active",
    f"backend remove web {BACKEND_IPS[2]} 80",
    f"backend weight web {BACKEND_IPS[0]} 80 50",
    f"backend state web {BACKEND_IPS[1]} 80 draining",
    f"lip add api {LIP2}",
    f"lip remove web {LIP2}",
    "service remove api",
]
NEW_SERVICE = [f"service add dns udp {VIP} 53 wlc", f"lip add dns {LIP}"]


def delta(gen: int, *lines: str, header: bool = True, generation: bool = True, end: bool = True) -> str:
    out = (["vgw-delta 1"] if header else []) + ([f"generation {gen}"] if generation else [])
    return "\n".join([*out, *lines, *(["end"] if end else [])]) + "\n"


def malformed(gen: int) -> Iterator[tuple[str, str]]:
    """(what, delta) for every malformed variant."""
    for line in [*GOOD, NEW_SERVICE[0]]:
        tokens = line.split()
        suffix = [NEW_SERVICE[1]] if line == NEW_SERVICE[0] else []
        for k in range(1, len(tokens)):
            short = " ".join(tokens[:k])
            yield f"short: {short!r}", delta(gen, short, *suffix)
        yield f"long: {line!r} x", delta(gen, f"{line} x", *suffix)
        yield f"duplicated: {line!r}", delta(gen, line, line, *suffix)
        yield f"before the header: {line!r}", f"{line}\n" + delta(gen, *suffix)
        yield (
            f"before the generation: {line!r}",
            f"vgw-delta 1\n{line}\ngeneration {gen}\n{chr(10).join(suffix)}\nend\n",
        )
        yield f"after end: {line!r}", delta(gen, *suffix) + f"{line}\n"
        yield f"no end: {line!r}", delta(gen, line, *suffix, end=False)
    yield "backend before its service", delta(gen, "backend add dns 198.18.0.11 53 1 active", *NEW_SERVICE)
    yield "lip before its service", delta(gen, f"lip add dns {LIP2}", *NEW_SERVICE)
    yield "removed then used", delta(gen, "service remove api", f"backend weight api {BACKEND_IPS[0]} 80 2")
    yield "no generation", delta(gen, *GOOD[:1], generation=False)
    yield "stale generation", delta(gen - 1, *GOOD[:1])
    yield "header twice", "vgw-delta 1\n" + delta(gen, *GOOD[:1])


@pytest.fixture(scope="module")
def forwarding(lab: Topology) -> Iterator[Topology]:
    lab.start_forwarder(workers=2)
    assert lab.forwarder is not None

    async def apply() -> None:
        c = FwdClient(str(lab.forwarder.socket), timeout_s=10)  # type: ignore[union-attr]
        try:
            await c.apply(BASE.format(gen=1))
        finally:
            await c.close()

    asyncio.run(apply())
    try:
        yield lab
    finally:
        lab.kill_forwarder()


def test_every_malformed_line_is_rejected_and_forwarding_goes_on(forwarding: Topology) -> None:
    assert forwarding.forwarder is not None
    sock = str(forwarding.forwarder.socket)

    async def scenario() -> int:
        c = FwdClient(sock, timeout_s=10)
        try:
            gen0 = (await c.hello())["generation"]
            cfg0 = await c.config()
            n = 0
            for what, doc in malformed(gen0 + 1):
                with pytest.raises(FwdError) as exc:
                    await c.delta(doc)
                assert str(exc.value).startswith("line "), (what, str(exc.value))
                assert (await c.hello())["generation"] == gen0, what
                n += 1
            assert await c.config() == cfg0
            return n
        finally:
            await c.close()

    # HTTP through the VIP while the bad deltas arrive, and after them.
    result: dict[str, object] = {}

    async def both() -> int:
        traffic = asyncio.create_task(asyncio.to_thread(http_requests, forwarding, 60))
        n = await scenario()
        result.update(await traffic)
        return n

    n = asyncio.run(both())
    assert n > 60
    assert result["nerrors"] == 0, result
    after = http_requests(forwarding, 30)
    assert after["nerrors"] == 0, after


def test_valid_deltas_still_apply(forwarding: Topology) -> None:
    assert forwarding.forwarder is not None

    async def scenario() -> None:
        c = FwdClient(str(forwarding.forwarder.socket), timeout_s=10)  # type: ignore[union-attr]
        try:
            gen = (await c.hello())["generation"]
            for line in GOOD[:4]:
                gen += 1
                assert await c.delta(delta(gen, line)) == gen
            gen += 1
            assert await c.delta(delta(gen, *NEW_SERVICE)) == gen
            text = await c.config()
            assert "service dns udp 192.0.2.10 53 wlc" in text
            assert f"backend web {BACKEND_IPS[2]} 80" not in text
            assert "backend web 198.18.0.14 80 100 active" in text
            # back to the three real backends (198.18.0.14 does not exist in the lab)
            gen += 1
            back = [
                "backend remove web 198.18.0.14 80",
                f"backend state web {BACKEND_IPS[1]} 80 active",
                f"backend add web {BACKEND_IPS[2]} 80 100 active",
            ]
            assert await c.delta(delta(gen, *back)) == gen
        finally:
            await c.close()

    asyncio.run(scenario())
    result = http_requests(forwarding, 30)
    assert result["nerrors"] == 0, result
