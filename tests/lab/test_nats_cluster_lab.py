"""`vgwctl lab up --nats-cluster 3` (issue 17): three NATS servers in one JetStream cluster, secured
like the single one; every service uses all three and keeps every stream at three replicas; the
VIP is served; `down` leaves nothing behind. Its own lab (the module fixture of conftest.py stays
single-server)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab.lab import Lab
from tests.lab.conftest import lab_up


@pytest.fixture(scope="module")
def cluster_lab() -> Iterator[Lab]:
    with lab_up("n", nats_cluster=3) as lab:  # its leftover checks include the NATS servers
        yield lab


def test_three_secured_servers_and_every_stream_at_three_replicas(cluster_lab: Lab) -> None:
    st = cluster_lab.state
    assert st is not None and st.security is not None
    urls = st.nats_url.split(",")
    assert len(urls) == 3 and all(u.startswith("tls://127.0.0.1:") for u in urls)
    confs = sorted((Path(st.security) / "nats").glob("nats-server-*.conf"))
    assert len(confs) == 3
    for conf in confs:
        text = conf.read_text()
        assert "include ./tls.conf" in text and "include ./authorization.conf" in text
        assert "authorization" in text.split("cluster {", 1)[1], "routes without a password"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds the routes' password
    streams: dict[str, float] = {}
    for service in st.metrics:
        for line in cluster_lab.metrics(service).splitlines():
            if line.startswith("vgw_js_replicas{"):
                streams[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
            if line.startswith("vgw_js_replicas_mismatch{"):
                assert line.endswith(" 0.0"), f"{service}: {line}"
    assert {"VGW_EVENTS", "KV_vgw_config", "KV_vgw_health", "KV_vgw_routes"} <= set(streams), streams
    assert set(streams.values()) == {3.0}, streams


def test_the_vip_is_served_by_both_nodes(cluster_lab: Lab) -> None:
    assert len(cluster_lab.router_next_hops()) == 2
    assert cluster_lab.client_get() is not None
