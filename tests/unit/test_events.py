"""Event models, subjects and the CloudEvents codec, including hostile input."""

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vgw.events import (
    BackendDown,
    ConfigChanged,
    DataplaneStatus,
    Endpoint,
    Event,
    NodeWithdrawRequest,
    Rejected,
    VipWithdraw,
    decode,
    encode,
    registry,
)
from vgw.events.base import Event as BaseEvent

DOWN = BackendDown(
    service="web-http",
    vip="192.0.2.10",
    port=80,
    protocol="tcp",
    backend=Endpoint(address="198.51.100.5", port=8080),
    check="http-health",
    check_kind="http",
    previous_state="up",
    reason="status",
    detail="HTTP 503",
    last_latency_ms=3.2,
    consecutive=3,
    checker="hc-1",
)


def test_catalogue_has_every_design_event() -> None:
    names = {m.name for m in registry().values()}
    assert names == {
        "config.changed",
        "backend.up",
        "backend.down",
        "dataplane.status",
        "vip.announce",
        "vip.withdraw",
        "monitor.vip.status",
        "request.node.withdraw",
        "request.cluster.withdraw",
        "node.drain.started",
        "node.drain.completed",
    }
    for event_type, model in registry().items():
        assert event_type == f"io.vgw.{model.name}.v1"
        assert model.summary, f"{model.__name__} needs a summary for the AsyncAPI document"


def test_subjects_are_filterable_tokens() -> None:
    assert DOWN.subject() == "vgw.v1.backend.down.web-http.198-51-100-5_8080"
    w = VipWithdraw(node="node-a", vip="2001:db8::10", state="withdrawn", reason="forwarder_down")
    assert w.subject() == "vgw.v1.vip.withdraw.2001-db8--10.node-a"
    assert ConfigChanged(revision=3, action="apply", actor="op").subject() == "vgw.v1.config.changed"
    r = NodeWithdrawRequest(request_id="r1", action="withdraw", node="node-b", requester="monitor/vp1", reason="x")
    assert r.subject() == "vgw.v1.request.node.withdraw.node-b.all.monitor"
    assert DataplaneStatus.subject_filter() == "vgw.v1.dataplane.status.>"
    assert ConfigChanged.subject_filter() == "vgw.v1.config.changed"


def test_round_trip_keeps_every_attribute() -> None:
    t = datetime(2026, 11, 26, 6, 0, 0, 123456, tzinfo=UTC)
    enc = encode(DOWN, source="/vgw/healthcheck/hc 1", event_id="id-1", time=t)
    assert enc.headers["ce-source"] == "/vgw/healthcheck/hc%201"  # percent-encoded space
    meta, event = decode(enc.subject, enc.headers, enc.body)
    assert event == DOWN
    assert (meta.id, meta.source, meta.type, meta.time) == ("id-1", "/vgw/healthcheck/hc 1", DOWN.event_type(), t)
    assert meta.subject == "service/web-http/backend/198.51.100.5:8080"


def test_header_names_are_read_case_insensitively() -> None:
    enc = encode(DOWN, source="/x")
    upper = {k.upper(): v for k, v in enc.headers.items()}
    assert decode(enc.subject, upper, enc.body)[1] == DOWN


def _hostile_cases() -> list[tuple[str, str, dict[str, str] | None, bytes]]:
    enc = encode(DOWN, source="/x")
    h = enc.headers
    without = lambda k: {a: b for a, b in h.items() if a != k}  # noqa: E731
    req = encode(
        NodeWithdrawRequest(
            request_id="r1", action="withdraw", node="node-a", requester="operator/alice", reason="maintenance"
        ),
        source="/x",
    )
    rh = req.headers
    return [
        ("no_headers", enc.subject, None, enc.body),
        ("no_headers", enc.subject, {}, enc.body),
        ("missing_attribute", enc.subject, without("ce-id"), enc.body),
        ("missing_attribute", enc.subject, without("ce-type"), enc.body),
        ("bad_specversion", enc.subject, {**h, "ce-specversion": "0.3"}, enc.body),
        ("unknown_type", enc.subject, {**h, "ce-type": "io.vgw.nope.v1"}, enc.body),
        ("bad_content_type", enc.subject, {**h, "ce-datacontenttype": "text/plain"}, enc.body),
        ("bad_time", enc.subject, {**h, "ce-time": "yesterday"}, enc.body),
        ("bad_time", enc.subject, {**h, "ce-time": "2026-11-26T06:00:00"}, enc.body),
        ("not_json", enc.subject, h, b"\xff\xfe not json"),
        ("not_json", enc.subject, h, b"[" * 100_000),
        ("invalid_data", enc.subject, h, b'{"service": "web-http"}'),
        ("invalid_data", enc.subject, h, enc.body.replace(b'"port":80', b'"port":70000')),
        ("invalid_data", enc.subject, h, enc.body[:-1] + b',"extra":1}'),
        ("subject_mismatch", "vgw.v1.backend.down.other.198-51-100-5_8080", h, enc.body),
        # A request claiming to come from an operator, published where only monitors may publish.
        ("subject_mismatch", req.subject.removesuffix(".operator") + ".monitor", rh, req.body),
        ("invalid_data", req.subject, rh, req.body.replace(b"operator/alice", b"nobody/alice")),
    ]


@pytest.mark.parametrize(("reason", "subject", "headers", "body"), _hostile_cases())
def test_hostile_messages_are_rejected_with_reason(
    reason: str, subject: str, headers: dict[str, str] | None, body: bytes
) -> None:
    with pytest.raises(Rejected) as info:
        decode(subject, headers, body)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80),
    st.one_of(st.none(), st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=8)),
    st.binary(max_size=512),
)
def test_decode_never_raises_anything_but_rejected(subject: str, headers: dict[str, str] | None, body: bytes) -> None:
    with contextlib.suppress(Rejected):
        decode(subject, headers, body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(DOWN.model_dump(mode="json"))), st.none() | st.integers() | st.text()))
def test_decode_mutated_data_is_accepted_only_when_valid(patch: dict[str, object]) -> None:
    enc = encode(DOWN, source="/x")
    import json

    doc = {**DOWN.model_dump(mode="json"), **patch}
    body = json.dumps(doc).encode()
    try:
        _, event = decode(enc.subject, enc.headers, body)
    except Rejected as r:
        assert r.reason in ("invalid_data", "subject_mismatch")
        return
    assert isinstance(event, BackendDown)


def test_models_reject_bad_values() -> None:
    with pytest.raises(ValidationError):
        BackendDown.model_validate({**DOWN.model_dump(), "service": "bad.name"})
    with pytest.raises(ValidationError):
        DataplaneStatus(node="n1", seq=-1, interval_s=1, forwarder="up")
    with pytest.raises(ValidationError):
        VipWithdraw(node="n", vip="192.0.2.1", state="withdrawn", reason="because")


def test_event_types_are_unique() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class Again(BaseEvent):
            name = "backend.down"

    assert issubclass(BackendDown, Event)
