import subprocess
import sys

import pytest

from vgw.settings import VgwSettings


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "from vgw.settings import VgwSettings, load_settings; load_settings(VgwSettings); print('ok')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("VGW_NATS_URL", "http://127.0.0.1:4222", "must start with"),
        ("VGW_METRICS_ADDR", "nohost", "is not host:port"),
        ("VGW_METRICS_ADDR", "127.0.0.1:99999", "is not host:port"),
        ("VGW_LOG_LEVEL", "loud", "Input should be"),
        ("VGW_NATS_CREDS", "/nonexistent/x.creds", "does not point to a file"),
        ("VGW_SHUTDOWN_TIMEOUT_S", "-1", "greater than 0"),
        ("VGW_INSTANCE_ID", "has space", "not a valid name"),
        ("VGW_NATS_URL", "tls://nats.example:4222", "is not a loopback address and no NATS credentials"),
        ("VGW_NATS_URL", "nats://127.0.0.1:4222,nats://192.0.2.9:4222", "is not a loopback address"),
        ("VGW_NATS_INBOX_PREFIX", "_INBOX.x", "String should match pattern"),
    ],
)
def test_bad_setting_names_the_variable_and_exits_2(child_env: dict[str, str], var: str, value: str, why: str) -> None:
    r = _run({**child_env, var: value})
    assert r.returncode == 2, r
    assert var in r.stderr and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_password_is_never_echoed(child_env: dict[str, str]) -> None:
    r = _run({**child_env, "VGW_NATS_PASSWORD": "s3cret-value"})
    assert r.returncode == 2
    assert "s3cret-value" not in r.stderr


def test_defaults_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGW_NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("VGW_NATS_USER", "vgw")
    monkeypatch.setenv("VGW_NATS_PASSWORD", "pw")
    monkeypatch.setenv("VGW_INSTANCE_ID", "host.example")
    s = VgwSettings()
    opts = s.nats_options()
    assert opts["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert (opts["user"], opts["password"]) == ("vgw", "pw")
    assert "tls" not in opts
    assert s.instance_id == "host-example"


def test_remote_nats_without_credentials_needs_the_insecure_switch(child_env: dict[str, str]) -> None:
    r = _run({**child_env, "VGW_NATS_URL": "nats://192.0.2.9:4222", "VGW_NATS_INSECURE": "true"})
    assert r.returncode == 0 and "ok" in r.stdout, r


def test_inbox_prefix_names_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGW_NATS_INBOX_PREFIX", "_INBOX_shim-node-a")
    s = VgwSettings()
    assert s.nats_options()["inbox_prefix"] == "_INBOX_shim-node-a"
    assert s.nats_identity == "shim-node-a"
    monkeypatch.delenv("VGW_NATS_INBOX_PREFIX")
    assert VgwSettings().nats_identity == "anonymous"
