import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgw.duration import parse_duration
from vgw.naming import TokenError, addr_token, check_name, endpoint_token, token_addr, token_endpoint


@pytest.mark.parametrize(
    ("addr", "token"),
    [
        ("198.51.100.7", "198-51-100-7"),
        ("2001:db8::1", "2001-db8--1"),
        ("2001:db8:0:0:1:2:3:4", "2001-db8--1-2-3-4"),
        ("::", "--"),
    ],
)
def test_addr_token_round_trip(addr: str, token: str) -> None:
    assert addr_token(addr) == token
    assert token_addr(token) == str(ipaddress.ip_address(addr))  # the canonical form comes back


@given(st.ip_addresses(), st.integers(0, 65535))
def test_endpoint_tokens_are_reversible_and_token_safe(ip: object, port: int) -> None:
    token = endpoint_token(str(ip), port)
    assert not set(token) & set(".:*> \t")
    assert token_endpoint(token) == (str(ip), port)


@pytest.mark.parametrize("bad", ["", "1.2.3", "not-an-ip", "198.51.100.256"])
def test_addr_token_rejects_non_addresses(bad: str) -> None:
    with pytest.raises(TokenError):
        addr_token(bad)


@pytest.mark.parametrize("bad", ["", "-x", "a.b", "a b", "x" * 64, "a>", "a*"])
def test_check_name_rejects(bad: str) -> None:
    with pytest.raises(TokenError):
        check_name(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), ("12", 12), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5x", "m5", "-1s", "5m3", "inf", "nan", "1h 30m"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
