"""The shim's flood-protection metrics (dataplane/shim/fwdmetrics.py) from STATS replies of
vgw-fwd's shape (docs/forwarder.md), through the shim's collector and the Prometheus exposition;
and ``vgwctl forwarder``'s view of the same replies. tests/forwarder/test_fwd_protect.py feeds both
with a real forwarder's replies."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.shim.main import ForwarderCollector
from vgw.cli import forwarder as fwdcli
from vgw.cli.main import main as vgwctl

PROTECT = {
    "syn_cookie_sent": 500, "syn_cookie_ok": 20, "syn_cookie_bad": 3, "conn_evicted": 7, "drop_limit_cps": 11,
    "drop_limit_src24": 13, "drop_no_conn": 17, "rst_sent": 19, "lport_exhausted": 23, "syn_proxy_active": 2,
}  # fmt: skip
ZERO = dict.fromkeys(PROTECT, 0)


def stats(**over: Any) -> dict[str, Any]:
    base = {
        "pid": 42, "start_unix_ns": 1, "uptime_ms": 3_723_000, "generation": 5, "workers": 2, "mode": "dual-arm",
        "syn_cookie_key": "file",
        "counters": {"conn_active": 30, "conn_halfopen": 9, "conn_new": 40, "rx": 1000, "syn_cookie_sent": 500,
                     "syn_cookie_ok": 20, "syn_cookie_bad": 3, "drop_limit_cps": 11, "lport_exhausted": 23},
        "ports": {},
        "services": {
            "web": {"vip": "192.0.2.10", "port": 80, "proto": "tcp", "packets_in": 4, "conn_new": 1, **PROTECT},
            "dns": {"vip": "192.0.2.10", "port": 53, "proto": "udp", "packets_in": 9, "conn_new": 9, **ZERO,
                    "drop_limit_cps": 5},
            "idle": {"vip": "192.0.2.11", "port": 443, "proto": "tcp", "packets_in": 0, "conn_new": 0, **ZERO},
        },
        "lips": {"198.18.0.100": {"lport_exhausted": 23}},
    }  # fmt: skip
    base.update(over)
    return base


def families(st: dict[str, Any]) -> dict[str, Any]:
    reg = CollectorRegistry()
    reg.register(ForwarderCollector(SimpleNamespace(fwd_up=True, last_stats=st)))  # type: ignore[arg-type]
    return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}


def samples(fam: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if not s.name.endswith("_created")}


def test_per_service_protection_metrics() -> None:
    f = families(stats())
    cookies = f["vgw_forwarder_service_syn_cookies"]
    assert cookies.type == "counter"
    assert samples(cookies) == {
        (("result", "sent"), ("service", "web"), ("vip", "192.0.2.10")): 500.0,
        (("result", "ok"), ("service", "web"), ("vip", "192.0.2.10")): 20.0,
        (("result", "bad"), ("service", "web"), ("vip", "192.0.2.10")): 3.0,
        (("result", "sent"), ("service", "idle"), ("vip", "192.0.2.11")): 0.0,
        (("result", "ok"), ("service", "idle"), ("vip", "192.0.2.11")): 0.0,
        (("result", "bad"), ("service", "idle"), ("vip", "192.0.2.11")): 0.0,
    }  # TCP only: no cookie series for the UDP service
    web = (("service", "web"), ("vip", "192.0.2.10"))
    proxy = f["vgw_forwarder_service_syn_proxy_active"]
    assert proxy.type == "gauge"
    assert samples(proxy)[web] == 1.0  # engaged on 2 workers: the gauge says engaged
    assert samples(proxy)[(("service", "idle"), ("vip", "192.0.2.11"))] == 0.0
    assert samples(f["vgw_forwarder_service_evicted_connections"])[web] == 7.0
    assert samples(f["vgw_forwarder_service_no_conn_drops"])[web] == 17.0
    assert samples(f["vgw_forwarder_service_rst_sent"])[web] == 19.0
    assert samples(f["vgw_forwarder_service_lip_port_exhausted"])[web] == 23.0
    limits = samples(f["vgw_forwarder_service_limit_drops"])
    assert limits[(("limit", "cps"), *web)] == 11.0 and limits[(("limit", "src24"), *web)] == 13.0
    # the UDP service has the limits and LIP ports, nothing TCP-only
    dns = (("service", "dns"), ("vip", "192.0.2.10"))
    assert limits[(("limit", "cps"), *dns)] == 5.0
    assert dns in samples(f["vgw_forwarder_service_lip_port_exhausted"])
    for name in ("vgw_forwarder_service_syn_proxy_active", "vgw_forwarder_service_evicted_connections",
                 "vgw_forwarder_service_rst_sent", "vgw_forwarder_service_no_conn_drops"):  # fmt: skip
        assert dns not in samples(f[name]), name


def test_node_half_open_gauge_and_lip_exhaustion() -> None:
    f = families(stats())
    half = f["vgw_forwarder_half_open_connections"]
    assert half.type == "gauge" and samples(half) == {(): 9.0}
    events = samples(f["vgw_forwarder_events"])
    assert (("event", "syn_cookie_sent"),) in events and (("event", "conn_halfopen"),) not in events
    assert samples(f["vgw_forwarder_connections"]) == {(): 30.0}
    lips = f["vgw_forwarder_lip_port_exhausted"]
    assert lips.type == "counter" and samples(lips) == {(("lip", "198.18.0.100"),): 23.0}


def test_a_forwarder_without_flood_protection() -> None:
    """An older vgw-fwd (no protection counters, no lips block): nothing made up, nothing breaks."""
    st = stats()
    for s in st["services"].values():
        for k in PROTECT:
            s.pop(k)
    del st["lips"]
    del st["counters"]["conn_halfopen"]
    f = families(st)
    assert samples(f["vgw_forwarder_service_syn_cookies"]) == {}
    assert samples(f["vgw_forwarder_service_limit_drops"]) == {}
    assert "vgw_forwarder_half_open_connections" not in f and "vgw_forwarder_lip_port_exhausted" not in f
    assert samples(f["vgw_forwarder_service_packets"])  # the rest as before


# --- vgwctl forwarder ---------------------------------------------------------------------------------


def later(st: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The same forwarder `seconds` later: web got 1000 more cookies/s, the LIP 10 more failures/s."""
    nxt = copy.deepcopy(st)
    nxt["uptime_ms"] += int(seconds * 1000)
    nxt["services"]["web"]["syn_cookie_sent"] += int(1000 * seconds)
    nxt["counters"]["syn_cookie_sent"] += int(1000 * seconds)
    nxt["lips"]["198.18.0.100"]["lport_exhausted"] += int(10 * seconds)
    return nxt


def test_vgwctl_forwarder_view_rates_and_filter() -> None:
    a = stats()
    v = fwdcli.view(a, later(a, 2.0), 2.0)
    assert [s["service"] for s in v["services"]] == ["dns", "web"]  # idle has no protection activity
    web = next(s for s in v["services"] if s["service"] == "web")
    assert (web["syn_proxy_workers"], web["syn_cookie_sent"], web["syn_cookie_sent_per_s"]) == (2, 2500, 1000.0)
    assert web["syn_cookie_ok_per_s"] == 0.0
    assert v["node"]["syn_cookie_sent_per_s"] == 1000.0
    assert v["lips"] == [{"lip": "198.18.0.100", "lport_exhausted": 43, "lport_exhausted_per_s": 10.0}]
    assert (v["connections"], v["half_open"], v["services_total"]) == (30, 9, 3)
    assert [s["service"] for s in fwdcli.view(a, a, 1.0, all_services=True)["services"]] == ["dns", "idle", "web"]
    text = fwdcli.render(v)
    assert "up 1h02m" in text and "SYN cookie key from a file (shared)" in text and "half-open 9" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("web "))
    assert "192.0.2.10:80/tcp" in line and "on, 2/2 workers" in line and "2.5k (1.0k/s)" in line
    assert "11 / 13" in line
    assert "(1 services without protection activity not shown: --all)" in text
    assert any(ln.split() == ["198.18.0.100", "43", "(10/s)"] for ln in text.splitlines()), text


def test_vgwctl_forwarder_no_rates_across_a_restart_or_without_interval() -> None:
    a = stats()
    b = later(a, 1.0)
    b["pid"] = 43  # a new forwarder process: its counters started again
    v = fwdcli.view(a, b, 1.0)
    assert v["interval_s"] == 0.0 and all(s["syn_cookie_sent_per_s"] is None for s in v["services"])
    assert "/s over" not in fwdcli.render(v)
    v = fwdcli.view(None, a, 0.0)
    assert v["lips"][0]["lport_exhausted_per_s"] is None
    empty = stats(services={}, lips={})
    text = fwdcli.render(fwdcli.view(None, empty, 0.0))
    assert "(no services)" in text and "(none)" in text


def test_vgwctl_forwarder_unreachable_and_bad_interval(tmp_path: Any, capsys: Any) -> None:
    assert vgwctl(["forwarder", "--socket", str(tmp_path / "nothing.sock"), "--interval", "0"]) == 3
    assert "forwarder control socket unreachable" in capsys.readouterr().err
    assert vgwctl(["forwarder", "--socket", str(tmp_path / "nothing.sock"), "--interval", "-1"]) == 2
