"""vgw-shim + vgw-fwd end to end, with a real nats-server and real DPDK in namespaces.

The config goes into the config store the way the config service writes it; health entries go into
``vgw_health`` the way healthcheck writes them. Checks issue #4's acceptance for the shim: the
node's state is programmed from config + health; marking a backend down stops new connections to
it within 1 s while a long-lived connection to it keeps working; after ``kill -9`` of vgw-fwd and a
restart the shim re-applies the full state within 2 s and ``dataplane.status`` shows the gap;
forwarder counters are on /metrics; each apply is a span; with NATS gone the forwarder keeps its
state (and a restarted forwarder gets it back from the shim).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.forwarder.conftest import needs_lab
from tests.forwarder.shimproc import CHECK, health, seed, vgw_shim, wait_for
from tests.forwarder.topology import BACKEND_IPS, VIP, Topology, http_requests
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus, Received
from vgw.events import BackendState, DataplaneStatus, ForwarderState
from vgw.fwdctl import FwdClient, FwdUnavailableError
from vgw.health import health_key

pytestmark = [needs_lab, pytest.mark.integration]

NODE = "node-t"


async def fwd_state(sock: Path) -> tuple[int, str] | None:
    c = FwdClient(str(sock), timeout_s=2)
    try:
        return (await c.hello())["generation"], await c.config()
    except FwdUnavailableError:
        return None
    finally:
        await c.close()


async def test_shim_programs_health_restart_and_fail_static(
    lab: Topology, nats_server: NatsServer, child_env: dict[str, str], tmp_path: Path
) -> None:
    bus = Bus({"servers": [nats_server.url], "reconnect_time_wait": 0.2}, source="/vgw/tests/shim")
    await bus.connect()
    await bus.ensure_event_stream()
    statuses: list[DataplaneStatus] = []

    async def on_status(r: Received) -> None:
        assert isinstance(r.event, DataplaneStatus)
        statuses.append(r.event)

    sub = await bus.subscribe(on_status, types=[DataplaneStatus], subject=f"vgw.v1.dataplane.status.{NODE}")
    revision, hkv = await seed(bus, NODE, reason="shim e2e")

    fwd = lab.start_forwarder(workers=2)
    metrics_port = free_port()
    trace_file = tmp_path / "spans.jsonl"
    env = {
        **child_env,
        "VGW_NATS_URL": nats_server.url,
        "VGW_NODE_ID": NODE,
        "VGW_FWD_SOCKET": str(fwd.socket),
        "VGW_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "VGW_INSTANCE_ID": "shim-test",
        "VGW_TRACE_FILE": str(trace_file),
        "VGW_NATS_RECONNECT_WAIT_S": "0.2",
    }
    shim_log = tmp_path / "shim.log"
    try:
        with vgw_shim(env, shim_log) as shim:
            # 1. programmed from config + health; status says so
            up = await wait_for(
                lambda: next(
                    (s for s in statuses if s.forwarder == ForwarderState.UP and s.config_revision == revision), None
                ),
                20,
                "dataplane.status up at the committed revision",
            )
            assert [str(v) for v in up.vips] == [VIP] and up.services == 1
            res = await asyncio.to_thread(http_requests, lab, 60)
            assert res["nerrors"] == 0, res
            assert set(res["counts"]) == {"be0", "be1", "be2"}  # type: ignore[call-overload]

            # 2. a long-lived connection, then its backend goes down in the health bucket
            curl = ["curl", "-sS", "-N", "--max-time", "30", f"http://{VIP}/slow?s=4"]
            slow = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns_client, *curl],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                # (index,) so that backend 0 is a truthy answer
                (owner,) = await wait_for(
                    lambda: next(
                        ((i,) for i in range(3) if any(str(e["path"]).startswith("/slow") for e in lab.backend_log(i))),
                        None,
                    ),
                    5,
                    "the slow request to reach a backend",
                )
            except AssertionError:
                slow.kill()
                print("curl:", slow.communicate())
                c = FwdClient(str(fwd.socket))
                print(json.dumps(await c.stats()))
                await c.close()
                raise
            gen_before = (await fwd_state(fwd.socket) or (0, ""))[0]
            t_down = time.monotonic()
            await hkv.put(health_key(BACKEND_IPS[owner], 80, CHECK), health(BACKEND_IPS[owner], BackendState.DOWN))

            async def drained() -> bool:
                st = await fwd_state(fwd.socket)
                return st is not None and st[0] > gen_before and f"{BACKEND_IPS[owner]} 80 100 draining" in st[1]

            await wait_for(drained, 1.0, "the forwarder to drain the backend marked down")
            took = time.monotonic() - t_down
            print(f"health down -> forwarder draining in {took * 1000:.0f} ms")
            res = await asyncio.to_thread(http_requests, lab, 30)
            assert res["nerrors"] == 0, res
            assert f"be{owner}" not in res["counts"], res  # type: ignore[operator]
            out, err = await asyncio.to_thread(slow.communicate, timeout=30)
            assert slow.returncode == 0, err
            assert out.decode().count(f"be{owner}") >= 35, "the long-lived connection was cut"

            # 3. kill -9 the forwarder, restart it: full state again within 2 s, status shows the gap
            first_start = up.forwarder_started_at
            n_before = len(statuses)
            lab.kill_forwarder(signal.SIGKILL)
            await wait_for(
                lambda: any(s.forwarder == ForwarderState.DOWN for s in statuses[n_before:]), 5, "a status saying down"
            )
            t_restart = time.monotonic()
            fwd = lab.start_forwarder(workers=2)  # same socket path
            t_ready = time.monotonic()

            async def reprogrammed() -> bool:
                st = await fwd_state(fwd.socket)
                return st is not None and st[0] > 0 and f"service web tcp {VIP} 80" in st[1]

            await wait_for(reprogrammed, 2.0, "the shim to re-apply the full state to the restarted forwarder")
            t_done = time.monotonic()
            print(
                f"forwarder restart command -> ready in {(t_ready - t_restart) * 1000:.0f} ms, "
                f"ready -> full state applied in {(t_done - t_ready) * 1000:.0f} ms"
            )
            assert t_done - t_restart < 2.0, "restart to re-programmed took 2 s or more"
            st = await fwd_state(fwd.socket)
            assert st is not None and f"{BACKEND_IPS[owner]} 80 100 draining" in st[1]  # health kept
            res = await asyncio.to_thread(http_requests, lab, 30)
            assert res["nerrors"] == 0, res
            back = await wait_for(
                lambda: next(
                    (
                        s
                        for s in statuses[n_before:]
                        if s.forwarder == ForwarderState.UP and s.forwarder_started_at != first_start
                    ),
                    None,
                ),
                5,
                "a status from the restarted forwarder",
            )
            assert back.config_revision == revision
            seq = [s.forwarder for s in statuses[n_before:]]
            assert ForwarderState.DOWN in seq[: seq.index(ForwarderState.UP) if ForwarderState.UP in seq else None]

            # 4. the backend comes back up
            await hkv.put(health_key(BACKEND_IPS[owner], 80, CHECK), health(BACKEND_IPS[owner], BackendState.UP))

            async def active_again() -> bool:
                s = await fwd_state(fwd.socket)
                return s is not None and f"{BACKEND_IPS[owner]} 80 100 active" in s[1]

            await wait_for(active_again, 2.0, "the backend to be active again")

            # 4b. someone else changes the forwarder behind the shim's back: the shim puts it back
            rogue = FwdClient(str(fwd.socket))
            g = (await rogue.hello())["generation"]
            await rogue.delta(
                f"vgw-delta 1\ngeneration {g + 1}\nbackend state web {BACKEND_IPS[owner]} 80 disabled\nend\n"
            )
            await rogue.close()
            await wait_for(active_again, 2.0, "the shim to restore the state another client changed")

            # 5. forwarder counters on /metrics, spans per apply
            await asyncio.sleep(1.2)
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            )
            assert 'vgw_forwarder_service_packets_total{direction="in",service="web"}' in body
            assert "vgw_forwarder_up 1.0" in body
            assert 'vgw_shim_applies_total{mode="full",result="ok"}' in body
            assert 'vgw_shim_applies_total{mode="delta",result="ok"}' in body

            def apply_spans() -> list[dict[str, object]]:
                spans = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
                return [s for s in spans if s.get("name") == "apply forwarder state"]

            applies = await wait_for(lambda: len(apply_spans()) >= 4 and apply_spans(), 10, "4 apply spans exported")
            assert {"full", "delta"} <= {s["attributes"]["vgw.apply.mode"] for s in applies}

            # 6. fail static: NATS goes away; forwarding goes on, and a restarted forwarder is re-programmed
            await sub.unsubscribe()
            await bus.close()
            nats_server.stop(kill=True)
            res = await asyncio.to_thread(http_requests, lab, 20)
            assert res["nerrors"] == 0, res
            lab.kill_forwarder(signal.SIGKILL)
            fwd = lab.start_forwarder(workers=2)
            await wait_for(reprogrammed, 2.0, "re-apply without NATS")
            res = await asyncio.to_thread(http_requests, lab, 20)
            assert res["nerrors"] == 0, res
            assert shim.poll() is None, "the shim died without NATS"
    except BaseException:
        print(shim_log.read_text()[-5000:])
        raise
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
