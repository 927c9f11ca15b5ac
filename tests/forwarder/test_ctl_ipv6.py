"""vgw-fwd refuses IPv6 services (it has no neighbour discovery yet) although the core reads them:
an APPLY or a DELTA whose result has one is answered with an error naming the service, and the
forwarder's state (generation, canonical configuration) stays exactly what it was; IPv4 changes
still apply afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vgw.fwdctl import FwdClient, FwdError

BASE = """vgw-config 1
generation {gen}
service web tcp 192.0.2.10 80 maglev table=251
lip web 198.18.0.100
backend web 198.18.0.11 80 100 active
end
"""

V6_SERVICE = """service web6 tcp 2001:db8::10 80 maglev
lip web6 2001:db8:1::100
backend web6 2001:db8:2::11 80 100 active
"""

V6_DELTA = """vgw-delta 1
generation 2
service add web6 tcp 2001:db8::10 80 maglev
lip add web6 2001:db8:1::100
backend add web6 2001:db8:2::11 80 100 active
end
"""

REFUSED = r"service web6: IPv6 services need neighbour discovery, which this vgw-fwd does not have yet"


async def test_ipv6_services_are_refused_and_change_nothing(ring_fwd: Path) -> None:
    c = FwdClient(str(ring_fwd), timeout_s=10)
    try:
        assert await c.apply(BASE.format(gen=1)) == 1
        before = await c.config()

        with pytest.raises(FwdError, match=REFUSED):
            await c.apply(BASE.format(gen=2).replace("end\n", V6_SERVICE + "end\n"))
        assert (await c.hello())["generation"] == 1 and await c.config() == before

        with pytest.raises(FwdError, match=REFUSED):
            await c.delta(V6_DELTA)
        assert (await c.hello())["generation"] == 1 and await c.config() == before

        # the core's own family rules come first, with their line numbers
        with pytest.raises(FwdError, match=r"line 4: service web: backend \[2001:db8:2::12\]:80 is IPv6 but the VIP"):
            await c.delta("vgw-delta 1\ngeneration 2\nbackend add web 198.18.0.12 80 1 active\n"
                          "backend add web 2001:db8:2::12 80 1 active\nend\n")  # fmt: skip
        assert await c.config() == before

        assert await c.delta("vgw-delta 1\ngeneration 2\nbackend add web 198.18.0.12 80 1 active\nend\n") == 2
        assert "backend web 198.18.0.12 80 1 active\n" in await c.config()
    finally:
        await c.close()
