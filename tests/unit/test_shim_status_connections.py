"""The shim's ``dataplane.status`` carries the forwarder's connection counts (route control's drain
reads them): from the last STATS reply while the forwarder is connected, none otherwise."""

from __future__ import annotations

from dataplane.shim.main import Shim, ShimSettings
from vgw.events import DataplaneStatus, ForwarderState


def shim() -> Shim:
    return Shim(ShimSettings(node_id="node-a", fwd_socket="/nonexistent/vgw-fwd.sock"))


def test_status_reports_connections_from_stats() -> None:
    s = shim()
    st = s.status()
    assert st.forwarder == ForwarderState.DOWN
    assert st.active_connections is None and st.half_open_connections is None

    s.fwd_up = True
    st = s.status()
    assert st.forwarder == ForwarderState.STARTING and st.active_connections is None  # no STATS read yet

    s.last_stats = {"counters": {"conn_active": 1843, "conn_halfopen": 12, "rx": 99}}
    st = s.status()
    assert (st.active_connections, st.half_open_connections) == (1843, 12)
    # It round-trips as an event (the schema in docs/events has the fields).
    again = DataplaneStatus.model_validate_json(st.model_dump_json())
    assert again.active_connections == 1843

    s.last_stats = {"counters": {"rx": 1}}  # an older forwarder without the gauges
    assert s.status().active_connections is None
    s.last_stats = {"counters": {"conn_active": 5}}
    s.fwd_up = False  # the forwarder went away: its last counts are not reported
    assert s.status().active_connections is None
