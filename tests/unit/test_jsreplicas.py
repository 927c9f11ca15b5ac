"""VGW_JS_REPLICAS: the setting, its default from the server, the mismatch report, and which
JetStream errors are worth a retry."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError, ServiceUnavailableError
from prometheus_client import REGISTRY

from vgw.jsreplicas import record, wanted_replicas
from vgw.jsretry import is_transient


def _settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "from vgw.settings import VgwSettings, load_settings; print(load_settings(VgwSettings).js_replicas)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", ["0", "6", "three", "-1"])
def test_bad_replicas_setting_names_the_variable_and_exits_2(child_env: dict[str, str], value: str) -> None:
    r = _settings({**child_env, "VGW_JS_REPLICAS": value})
    assert r.returncode == 2, r
    assert "bad setting VGW_JS_REPLICAS" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_replicas_setting_is_read(child_env: dict[str, str]) -> None:
    assert _settings({**child_env, "VGW_JS_REPLICAS": "3"}).stdout.strip() == "3"
    assert _settings(child_env).stdout.strip() == "None"  # unset: the server decides (below)


def test_default_follows_the_server() -> None:
    assert wanted_replicas(None, {"server_name": "one"}) == 1
    assert wanted_replicas(None, {"server_name": "n0", "cluster": "vgw"}) == 3
    assert wanted_replicas(1, {"cluster": "vgw"}) == 1  # the setting wins
    assert wanted_replicas(5, {}) == 5


def test_mismatch_is_logged_once_and_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="vgw.jsreplicas"):
        assert not record("KV_t_unit", 1, 3, "KV bucket t_unit")
        assert not record("KV_t_unit", 1, 3, "KV bucket t_unit")
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "KV_t_unit" in msg and "has 1 replica(s) but VGW_JS_REPLICAS wants 3" in msg
    assert "nats stream edit KV_t_unit --replicas 3" in msg
    assert REGISTRY.get_sample_value("vgw_js_replicas_mismatch", {"stream": "KV_t_unit"}) == 1.0
    assert REGISTRY.get_sample_value("vgw_js_replicas", {"stream": "KV_t_unit"}) == 1.0
    assert record("KV_t_unit", 3, 3, "KV bucket t_unit")  # fixed by the operator: the gauge clears
    assert REGISTRY.get_sample_value("vgw_js_replicas_mismatch", {"stream": "KV_t_unit"}) == 0.0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (NatsTimeoutError(), True),
        (NoRespondersError(), True),
        (ServiceUnavailableError(code=503, err_code=10008), True),
        (APIError(code=500, err_code=10009, description="JetStream cluster can not handle request"), True),
        (KeyWrongLastSequenceError(), False),  # a real conflict: never retried blindly
        (NotFoundError(code=404, err_code=10059), False),
        (APIError(code=500, err_code=10074, description="replicas > 1 not supported in non-clustered mode"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient
