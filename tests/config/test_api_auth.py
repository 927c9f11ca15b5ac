"""The config API secured (issue #15, point 3): listener policy, mTLS and token authentication, roles,
the actor from the authenticated identity, masked secrets, Watch and request-size caps. Against the real
vgw-config process and nats-server; certificates from tests/config/pki.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from services.config.auth import (
    Authenticator,
    AuthFailure,
    Role,
    cert_role,
    parse_tokens,
    required_role,
)
from services.config.secrets import MASK, MASK_CHANGED, mask_field, mask_value
from services.config.settings import ConfigSettings
from tests.config.bad_documents import example
from tests.config.conftest import REPO, ConfigService
from tests.config.pki import Pki
from tests.support.nats_server import NatsServer, free_port
from vgw.bus import Bus
from vgw.cli.main import main as vgwctl_main
from vgw.config.client import ConfigApiError, ConfigClient
from vgw.config.store import BUCKET, ConfigReader
from vgw.config.v1 import config_pb2 as pb

SERVER_NAME = "config.vgw.test"
SECRET = "md5-s3cret-value"
TOKENS = {"ci": ("operator", "tok-ci-0123"), "viewer": ("reader", "tok-view-4567"), "root": ("admin", "tok-root-89")}


def write_tokens(path: Path, tokens: dict[str, tuple[str, str]]) -> None:
    entries = [{"name": n, "role": r, "sha256": hashlib.sha256(t.encode()).hexdigest()} for n, (r, t) in tokens.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tokens": entries}))
    tmp.replace(path)  # atomically, as docs/config.md advises


def doc_yaml(password: str | None = SECRET, weight: int | None = None) -> bytes:
    d = example()
    if password is not None:
        d["nodes"][0]["bgp"]["peers"][0]["password"] = password
    if weight is not None:
        d["vips"][0]["services"][0]["backends"][0]["weight"] = weight
    return yaml.safe_dump(d, sort_keys=False).encode()


async def revision(c: ConfigClient) -> int:
    h = await c.history(limit=1)
    return h.revisions[0].revision if h.revisions else 0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    p = tmp_path / "tokens.json"
    write_tokens(p, TOKENS)
    return p


@pytest.fixture
def mtls_service(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str], pki: Pki, tokens_file: Path
) -> Iterator[ConfigService]:
    cert, key = pki.issue("config", ou="service", server_names=(SERVER_NAME,))
    svc = ConfigService(
        nats_server,
        tmp_path / "mtls",
        config_env,
        config_tls_cert=str(cert),
        config_tls_key=str(key),
        config_tls_client_ca=str(pki.ca_cert),
        config_tokens_file=str(tokens_file),
    ).start()
    try:
        yield svc
    finally:
        svc.stop(kill=True)


@pytest.fixture
def token_service(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str], tokens_file: Path
) -> Iterator[ConfigService]:
    """Tokens only, plaintext on loopback: allowed, and every call must still authenticate."""
    svc = ConfigService(nats_server, tmp_path / "tok", config_env, config_tokens_file=str(tokens_file)).start()
    try:
        yield svc
    finally:
        svc.stop(kill=True)


def cert_client(svc: ConfigService, pki: Pki, cn: str, ou: str | None, **kw: Any) -> ConfigClient:
    cert, key = pki.issue(cn, ou=ou)
    return ConfigClient(
        svc.addr, tls_ca=pki.ca_cert, client_cert=cert, client_key=key, server_name=SERVER_NAME, timeout_s=10, **kw
    )


# --- pure parts ------------------------------------------------------------------------------------


def test_required_roles() -> None:
    for m in ("Get", "List", "Diff", "History", "Watch"):
        assert required_role(m) == Role.READER
    for m in ("Rollback", "SetBackendState", "SetNodeState"):
        assert required_role(m) == Role.OPERATOR
    assert required_role("Apply", pb.ApplyRequest(dry_run=False)) == Role.OPERATOR
    assert required_role("Apply", pb.ApplyRequest(dry_run=True)) == Role.READER
    assert required_role("SomethingNew") == Role.ADMIN  # nothing is open by omission


def test_tokens_file_is_checked() -> None:
    digest = "ab" * 32
    good = parse_tokens(json.dumps({"tokens": [{"name": "ci", "role": "operator", "sha256": digest}]}), "t")
    assert [(e.name, e.role) for e in good] == [("ci", Role.OPERATOR)]
    for bad, words in [
        ("not json", "not JSON"),
        (json.dumps({"tokens": [{"name": "ci", "role": "root", "sha256": digest}]}), "role must be one of"),
        (json.dumps({"tokens": [{"name": "ci", "role": "reader", "sha256": "abc"}]}), "64 hex digits"),
        (json.dumps({"tokens": [{"name": "a", "role": "reader", "sha256": digest}] * 2}), "duplicate name"),
        (json.dumps([]), '{"tokens"'),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_tokens(bad, "t")


def test_certificate_role_is_the_one_role_ou(pki: Pki) -> None:
    for ou, role in [("reader", Role.READER), ("Operator", Role.OPERATOR), ("admin", Role.ADMIN), ("service", None)]:
        cert, _ = pki.issue(f"id-{ou}", ou=ou)
        assert cert_role(cert.read_bytes())[:2] == (f"id-{ou}", role)
    cert, _ = pki.issue("no-ou")
    assert cert_role(cert.read_bytes())[1] is None


def test_no_auth_means_claimed_actor_marked_unverified() -> None:
    local = Authenticator().authenticate([("x-vgw-actor", "bob")], {})
    assert (local.actor, local.role) == ("local:bob", Role.ADMIN)
    remote = Authenticator(loopback=False).authenticate([], {})
    assert remote.actor == "insecure:anonymous"
    with pytest.raises(AuthFailure) as info:
        Authenticator(legacy_token="t").authenticate([("x-vgw-actor", "bob")], {})
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and info.value.reason == "unauthenticated"


def test_masking_of_values_and_changes() -> None:
    node = {"id": "n", "bgp": {"peers": [{"address": "192.0.2.1", "password": "x"}, {"address": "192.0.2.2"}]}}
    assert mask_value(node)["bgp"]["peers"] == [{"address": "192.0.2.1", "password": MASK}, {"address": "192.0.2.2"}]
    old, new = mask_field("bgp.peers", [{"password": "x"}], [{"password": "y"}])
    assert (old, new) == ([{"password": MASK}], [{"password": MASK_CHANGED}])
    assert mask_field("bgp.peers", [{"password": "x"}], [{"password": "x"}]) == ([{"password": MASK}],) * 2
    assert mask_field("bgp.peers.password", None, "y") == (None, MASK)
    # A health check's HTTP header that happens to be called "password" is the user's data, not masked.
    assert mask_value({"headers": {"password": "v"}}) == {"headers": {"password": "v"}}


# --- listener policy -------------------------------------------------------------------------------


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigSettings:
    for k in list(os.environ):
        if k.startswith("VGW_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(f"VGW_{k.upper()}", v)
    return ConfigSettings()


def test_listener_policy(monkeypatch: pytest.MonkeyPatch, pki: Pki, tokens_file: Path) -> None:
    cert, key = pki.issue("config", ou="service", server_names=("localhost",))
    tls = {"config_tls_cert": str(cert), "config_tls_key": str(key)}
    for addr in ("0.0.0.0:50051", "[::]:50051", "192.0.2.10:50051", ":50051", "config.example:50051"):
        with pytest.raises(ValueError, match="not a loopback address"):
            _settings(monkeypatch, config_addr=addr)
        with pytest.raises(ValueError, match="no authentication"):
            _settings(monkeypatch, config_addr=addr, **tls)
        with pytest.raises(ValueError, match="no TLS"):
            _settings(monkeypatch, config_addr=addr, config_tokens_file=str(tokens_file))
        ok = _settings(monkeypatch, config_addr=addr, config_tokens_file=str(tokens_file), **tls)
        assert ok.config_secure and not ok.config_insecure_in_effect
        ok = _settings(monkeypatch, config_addr=addr, config_tls_client_ca=str(pki.ca_cert), **tls)
        assert ok.config_secure
        ok = _settings(monkeypatch, config_addr=addr, config_token="legacy", **tls)
        assert ok.config_secure
        loud = _settings(monkeypatch, config_addr=addr, config_insecure="true")
        assert loud.config_insecure_in_effect
    for addr in ("127.0.0.1:50051", "[::1]:50051", "localhost:50051", "127.0.0.2:1"):
        s = _settings(monkeypatch, config_addr=addr)
        assert s.config_loopback and not s.config_auth_configured and not s.config_insecure_in_effect
    with pytest.raises(ValueError, match="needs VGW_CONFIG_TLS_CERT"):
        _settings(monkeypatch, config_tls_client_ca=str(pki.ca_cert))
    bad = tokens_file.parent / "bad-tokens.json"
    bad.write_text('{"tokens": [{"name": "x", "role": "superuser", "sha256": ""}]}')
    with pytest.raises(ValueError, match="role must be one of"):
        _settings(monkeypatch, config_tokens_file=str(bad))


def test_process_refuses_open_listener_and_allows_the_loud_switch(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str]
) -> None:
    port = free_port()
    env = {**config_env, "VGW_NATS_URL": nats_server.url, "VGW_CONFIG_ADDR": f"0.0.0.0:{port}"}
    r = subprocess.run(
        [sys.executable, "-m", "services.config.main"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r
    assert "VGW_CONFIG_ADDR 0.0.0.0:" in r.stderr and "not a loopback address" in r.stderr
    assert "VGW_CONFIG_INSECURE=true" in r.stderr

    svc = ConfigService(nats_server, tmp_path / "insecure", config_env, config_addr=f"0.0.0.0:{port}")
    svc.grpc_port = port
    svc.env["VGW_CONFIG_INSECURE"] = "true"
    svc.start()
    try:
        assert "vgw_config_api_insecure 1.0" in svc.metrics()
        assert "INSECURE: VGW_CONFIG_INSECURE=true" in svc.log.read_text()

        async def apply() -> str:
            async with ConfigClient(svc.addr, actor="experimenter") as c:
                r = await c.apply(doc_yaml(password=None), reason="insecure")
                return r.info.actor

        assert asyncio.run(apply()) == "insecure:experimenter"  # recorded as an unverified claim
    finally:
        svc.stop(kill=True)


def test_loopback_without_auth_warns(config_service: ConfigService) -> None:
    assert "every local user of this host is admin" in config_service.log.read_text()
    assert "vgw_config_api_insecure 0.0" in config_service.metrics()


# --- authentication and roles -----------------------------------------------------------------------


async def test_mtls_roles_actor_and_failures(mtls_service: ConfigService, pki: Pki) -> None:
    svc = mtls_service
    async with cert_client(svc, pki, "olivia", "operator", actor="mallory-claims-this") as op:
        r = await op.apply(doc_yaml(), reason="by operator")
        assert r.committed and r.info.actor == "cert:olivia"  # the certificate, not the claimed header
    async with cert_client(svc, pki, "rita", "reader") as reader:
        assert (await reader.get()).revision == 1
        assert [h.actor for h in (await reader.history()).revisions] == ["cert:olivia"]
        dry = await reader.apply(doc_yaml(weight=7), dry_run=True)  # a dry run only reads
        assert dry.dry_run and not dry.committed
        for call in (
            reader.apply(doc_yaml(weight=7), reason="reader tries"),
            reader.set_node_state("node-a", pb.NODE_STATE_ISOLATED),
            reader.set_backend_state("198.51.100.21:8080", pb.BACKEND_STATE_DISABLED),
            reader.rollback(1),
        ):
            with pytest.raises(ConfigApiError) as info:
                await call
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "needs role operator" in info.value.message and "cert:rita has role reader" in info.value.message
        assert await revision(reader) == 1  # nothing changed
    async with cert_client(svc, pki, "alice", "admin") as admin:
        r = await admin.set_node_state("node-a", pb.NODE_STATE_ISOLATED, reason="admin")
        assert r.info.actor == "cert:alice"
    async with cert_client(svc, pki, "shim-x", "service") as service:
        with pytest.raises(ConfigApiError) as info:
            await service.get()
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED and "no config API role" in info.value.message
    # A token presented with a certificate names the caller.
    async with cert_client(svc, pki, "rita2", "reader", token=TOKENS["ci"][1]) as both:
        r = await both.set_node_state("node-a", pb.NODE_STATE_ACTIVE)
        assert r.info.actor == "token:ci"
    async with cert_client(svc, pki, "rita3", "reader", token="not-a-token") as bad:
        with pytest.raises(ConfigApiError) as info:
            await bad.get()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    # Without a client certificate, or with one from another CA, the TLS handshake fails.
    other = Pki.create(pki.directory / "other", "other CA")
    ocert, okey = other.issue("eve", ou="admin")
    for c in (
        ConfigClient(svc.addr, tls_ca=pki.ca_cert, server_name=SERVER_NAME, token=TOKENS["root"][1], timeout_s=3),
        ConfigClient(svc.addr, tls_ca=pki.ca_cert, client_cert=ocert, client_key=okey, server_name=SERVER_NAME,
                     timeout_s=3),
        ConfigClient(svc.addr, timeout_s=3),  # plaintext
    ):  # fmt: skip
        async with c:
            with pytest.raises(ConfigApiError) as info:
                await c.get()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    metrics = svc.metrics()
    assert 'vgw_config_api_auth_failures_total{identity="cert:rita",reason="permission_denied"} 4.0' in metrics
    assert 'vgw_config_api_auth_failures_total{identity="cert:shim-x",reason="no_role"} 1.0' in metrics
    assert 'vgw_config_api_auth_failures_total{identity="anonymous",reason="bad_token"} 1.0' in metrics
    lines = [json.loads(x) for x in svc.log.read_text().splitlines() if x.startswith("{")]
    failures = [x for x in lines if x.get("auth_failure")]
    # Rate-limited: one line for rita's four refusals within LOG_INTERVAL_S.
    assert [x["identity"] for x in failures if x["auth_failure"] == "permission_denied"] == ["cert:rita"]
    assert {x["auth_failure"] for x in failures} == {"permission_denied", "no_role", "bad_token"}


async def test_tokens_roles_and_revocation_without_restart(token_service: ConfigService, tokens_file: Path) -> None:
    svc = token_service
    async with ConfigClient(svc.addr, actor="nobody") as anon:
        for call in (anon.get(), anon.apply(doc_yaml())):
            with pytest.raises(ConfigApiError) as info:
                await call
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "needs credentials: a bearer token" in info.value.message
    async with ConfigClient(svc.addr, token="wrong") as bad:
        with pytest.raises(ConfigApiError) as info:
            await bad.history()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in info.value.message
    async with ConfigClient(svc.addr, token=TOKENS["viewer"][1]) as viewer:
        with pytest.raises(ConfigApiError) as info:
            await viewer.apply(doc_yaml(), reason="viewer")
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert await revision(viewer) == 0
    async with ConfigClient(svc.addr, token=TOKENS["ci"][1], actor="root") as ci:
        r = await ci.apply(doc_yaml(), reason="ci")
        assert r.committed and r.info.actor == "token:ci"

        # Revoke ci and add a new token: no restart.
        write_tokens(tokens_file, {**{k: v for k, v in TOKENS.items() if k != "ci"}, "new": ("operator", "tok-new")})
        with pytest.raises(ConfigApiError) as info:
            await ci.history()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with ConfigClient(svc.addr, token="tok-new") as new:
        r = await new.set_node_state("node-b", pb.NODE_STATE_ISOLATED)
        assert r.info.actor == "token:new"
        # A broken file accepts no token at all (fail closed) until it is fixed.
        await asyncio.to_thread(tokens_file.write_text, "{broken")
        with pytest.raises(ConfigApiError) as info:
            await new.history()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        write_tokens(tokens_file, {"new": ("operator", "tok-new")})
        assert await revision(new) == 2
    metrics = svc.metrics()
    assert 'vgw_config_api_auth_failures_total{identity="anonymous",reason="unauthenticated"} 2.0' in metrics
    assert 'vgw_config_api_auth_failures_total{identity="token:viewer",reason="permission_denied"} 1.0' in metrics


def test_vgwctl_credentials_from_env(
    mtls_service: ConfigService, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    rcert, rkey = pki.issue("rita", ou="reader")
    for k in list(os.environ):
        if k.startswith("VGW_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("VGW_CONFIG_ADDR", mtls_service.addr)
    monkeypatch.setenv("VGW_CONFIG_TLS_CA", str(pki.ca_cert))
    monkeypatch.setenv("VGW_CONFIG_CLIENT_CERT", str(rcert))
    monkeypatch.setenv("VGW_CONFIG_CLIENT_KEY", str(rkey))
    monkeypatch.setenv("VGW_CONFIG_TLS_SERVER_NAME", SERVER_NAME)
    doc = tmp_path / "doc.yaml"
    doc.write_bytes(doc_yaml())
    assert vgwctl_main(["history"]) == 0
    assert vgwctl_main(["apply", "-f", str(doc)]) == 1
    err = capsys.readouterr().err
    assert "permission denied: Apply (not a dry run) needs role operator" in err and "hint:" in err
    # A token file on top names the caller (operator "ci").
    token_file = tmp_path / "ci.token"
    token_file.write_text(TOKENS["ci"][1] + "\n")
    monkeypatch.setenv("VGW_CONFIG_TOKEN_FILE", str(token_file))
    assert vgwctl_main(["apply", "-f", str(doc), "--reason", "vgwctl"]) == 0
    capsys.readouterr()
    assert vgwctl_main(["history", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["actor"] == "token:ci"
    # No client certificate: the handshake fails, with a hint.
    monkeypatch.delenv("VGW_CONFIG_CLIENT_CERT")
    monkeypatch.delenv("VGW_CONFIG_CLIENT_KEY")
    assert vgwctl_main(["history", "--timeout", "3"]) == 3
    assert "--client-cert" in capsys.readouterr().err


# --- secrets -------------------------------------------------------------------------------------


async def test_secrets_masked_everywhere_and_round_trip(
    client: ConfigClient, config_service: ConfigService, nats_server: NatsServer
) -> None:
    payloads: list[bytes] = []
    subjects: list[str] = []

    async def collect(m: Any) -> None:
        subjects.append(m.subject)
        payloads.append(m.data + json.dumps(m.headers or {}).encode())

    nc = await nats.connect(nats_server.url)
    sub = await nc.subscribe("vgw.v1.>", cb=collect)
    watched: list[pb.WatchResponse] = []

    async def follow() -> None:
        async for msg in client.watch(include_document=True):
            watched.append(msg)

    task = asyncio.create_task(follow())
    try:
        r = await client.apply(doc_yaml(), reason="with a password", expected_revision=0)
        assert r.committed
        text = json.dumps([MessageToDict(c) for c in r.changes])
        assert SECRET not in text

        got = await client.get()
        assert SECRET not in got.document.decode()
        peer = yaml.safe_load(got.document)["nodes"][0]["bgp"]["peers"][0]
        assert peer["password"] == MASK
        assert SECRET not in (await client.get(fmt=pb.DOCUMENT_FORMAT_JSON)).document.decode()
        nodes = await client.list("nodes")
        assert SECRET not in str(nodes) and MASK in nodes.objects[0].json
        assert SECRET not in str(await client.history())

        # A new password shows as changed in a dry run and a diff, never in clear.
        dry = await client.apply(doc_yaml(password="another-secret"), dry_run=True)
        assert "another-secret" not in str(dry) and SECRET not in str(dry)
        assert MASK_CHANGED in str(dry) and [c.path for c in dry.changes] == ["nodes/node-a"]
        d = await client.diff(doc_yaml(password="another-secret"))
        assert "another-secret" not in str(d) and MASK_CHANGED in str(d)

        # get > edit > apply round-trips: the mask keeps the stored password.
        edited = yaml.safe_load(got.document)
        edited["vips"][0]["services"][0]["backends"][0]["weight"] = 3
        d = await client.diff(yaml.safe_dump(edited).encode())
        assert [c.path for c in d.changes] == ["services/www-http/backends/198.51.100.21:8080"]
        r2 = await client.apply(yaml.safe_dump(edited).encode(), reason="round trip")
        assert r2.committed and [c.path for c in r2.changes] == ["services/www-http/backends/198.51.100.21:8080"]
        same = await client.apply(got.document)  # only the weight differs from revision 1
        assert same.committed and same.revision == 3

        # The mask where no password is stored (node-b's peer) is refused, naming the path.
        bad = yaml.safe_load(got.document)
        bad["nodes"][1]["bgp"]["peers"][0]["password"] = MASK
        with pytest.raises(ConfigApiError) as info:
            await client.apply(yaml.safe_dump(bad).encode())
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        (v,) = info.value.violations
        assert v.path == "nodes[1].bgp.peers[0].password" and "no password is stored" in v.reason
        assert await revision(client) == 3

        d = await client.diff(from_revision=1, to_revision=3)
        assert SECRET not in str(d)
        d = await client.diff(to_revision=1)  # from the empty store: everything added
        assert SECRET not in str(d)

        # A password too long is refused without echoing it.
        with pytest.raises(ConfigApiError) as info:
            await client.apply(doc_yaml(password="L" * 81))
        assert "L" * 81 not in str(info.value) + str(info.value.violations)

        async with asyncio.timeout(10):
            while not watched or watched[-1].revision != 3:
                await asyncio.sleep(0.05)
        assert all(SECRET not in w.document.decode() for w in watched)
        assert any(MASK in w.document.decode() for w in watched)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sub.unsubscribe()
        await nc.close()

    # The stored document kept the real password through the masked round trips.
    bus = Bus({"servers": [nats_server.url]}, source="/vgw/tests/auth")
    await bus.connect()
    try:
        cur = await (await ConfigReader(bus, BUCKET).open()).current()
        assert cur.revision == 3
        node_a = cur.document.nodes[0]
        assert node_a.bgp is not None and node_a.bgp.peers[0].password == SECRET
    finally:
        await bus.close()
    # config.changed (and every other event) carries no secret.
    assert "vgw.v1.config.changed" in subjects
    assert all(SECRET.encode() not in p for p in payloads)


# --- caps ---------------------------------------------------------------------------------------


@pytest.fixture
def capped_service(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str], tokens_file: Path
) -> Iterator[ConfigService]:
    svc = ConfigService(
        nats_server,
        tmp_path / "caps",
        config_env,
        config_tokens_file=str(tokens_file),
        config_max_watches="3",
        config_max_watches_per_identity="2",
        config_max_request_bytes="65536",
    ).start()
    try:
        yield svc
    finally:
        svc.stop(kill=True)


@contextlib.asynccontextmanager
async def watching(c: ConfigClient) -> AsyncIterator[asyncio.Task[None]]:
    """A Watch stream held open (its first message received) for the block."""
    first = asyncio.get_running_loop().create_future()

    async def follow() -> None:
        try:
            async for _ in c.watch():
                if not first.done():
                    first.set_result(None)
        except ConfigApiError as exc:
            if not first.done():
                first.set_exception(exc)

    task = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(10):
            await first
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_watch_caps(capped_service: ConfigService) -> None:
    svc = capped_service
    async with (
        ConfigClient(svc.addr, token=TOKENS["viewer"][1]) as a,
        ConfigClient(svc.addr, token=TOKENS["ci"][1]) as b,
    ):
        async with watching(a), watching(a):
            with pytest.raises(ConfigApiError) as info:
                async with watching(a):
                    pass
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "token:viewer" in info.value.message and "VGW_CONFIG_MAX_WATCHES_PER_IDENTITY" in info.value.message
            async with watching(b):
                with pytest.raises(ConfigApiError) as info:
                    async with watching(b):
                        pass
                assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "the limit is 3 (VGW_CONFIG_MAX_WATCHES)" in info.value.message
        # Closed streams are given back.
        deadline = time.monotonic() + 10
        while True:
            try:
                async with watching(a), watching(a), watching(b):
                    break
            except ConfigApiError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    assert 'vgw_config_watch_refused_total{scope="identity"} 1.0' in svc.metrics()


async def test_request_size_cap(capped_service: ConfigService) -> None:
    async with ConfigClient(capped_service.addr, token=TOKENS["ci"][1]) as c:
        big = doc_yaml(password=None) + b"# " + b"x" * 100_000 + b"\n"
        with pytest.raises(ConfigApiError) as info:
            await c.apply(big, reason="too big")
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the config service accepts at most 65536 bytes (VGW_CONFIG_MAX_REQUEST_BYTES" in info.value.message
        assert await revision(c) == 0
        r = await c.apply(doc_yaml(password=None), reason="fits")
        assert r.committed


# --- with the files of `vgwctl security init` ---------------------------------------------------------


def _config_env(path: Path) -> dict[str, str]:
    """The VGW_CONFIG_* lines of an identity's vgw.env (the test's NATS stays the plain test server)."""
    out = {}
    for line in path.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip().startswith("VGW_CONFIG_"):
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def test_security_init_files_work(
    nats_server: NatsServer,
    tmp_path: Path,
    config_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    security = pytest.importorskip("vgw.security")
    root = tmp_path / "sec"
    security.init_dir(root, ["node-a"])
    server = _config_env(root / "identities" / "config" / "vgw.env")
    assert {"VGW_CONFIG_TLS_CERT", "VGW_CONFIG_TLS_CLIENT_CA", "VGW_CONFIG_TOKENS_FILE"} <= server.keys()
    svc = ConfigService(nats_server, tmp_path / "cfg", {**config_env, **server})
    svc.start()
    try:
        for k in list(os.environ):
            if k.startswith("VGW_"):
                monkeypatch.delenv(k)
        doc = tmp_path / "doc.yaml"
        doc.write_bytes(doc_yaml())

        def as_identity(identity: str) -> None:
            for k in list(os.environ):
                if k.startswith("VGW_CONFIG_"):
                    monkeypatch.delenv(k)
            for k, v in _config_env(root / "identities" / identity / "vgw.env").items():
                monkeypatch.setenv(k, v)
            monkeypatch.setenv("VGW_CONFIG_ADDR", svc.addr)

        as_identity("subscriber")
        assert vgwctl_main(["apply", "-f", str(doc)]) == 1
        assert "needs role operator" in capsys.readouterr().err
        as_identity("operator")
        assert vgwctl_main(["apply", "-f", str(doc), "--reason", "from security init"]) == 0
        as_identity("subscriber")
        capsys.readouterr()
        assert vgwctl_main(["history", "-o", "json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["actor"] in ("token:operator", "cert:operator")
    finally:
        svc.stop(kill=True)


async def test_a_non_loopback_api_refuses_calls_without_a_token(
    nats_server: NatsServer, tmp_path: Path, config_env: dict[str, str], pki: Pki, tokens_file: Path
) -> None:
    """The API on every address (0.0.0.0) with TLS and tokens: a call without a token, a wrong token
    or without TLS changes nothing; a call with a token goes through."""
    port = free_port()
    cert, key = pki.issue("config", ou="service", server_names=(SERVER_NAME,))
    svc = ConfigService(
        nats_server, tmp_path / "open", config_env, config_addr=f"0.0.0.0:{port}",
        config_tls_cert=str(cert), config_tls_key=str(key), config_tokens_file=str(tokens_file),
    )  # fmt: skip
    svc.grpc_port = port
    svc.start()
    try:
        tls = {"tls_ca": pki.ca_cert, "server_name": SERVER_NAME, "timeout_s": 10}
        for label, client in (
            ("no token", ConfigClient(svc.addr, actor="mallory", **tls)),
            ("bad token", ConfigClient(svc.addr, token="guess", actor="mallory", **tls)),
        ):
            async with client as c:
                with pytest.raises(ConfigApiError) as info:
                    await c.apply(doc_yaml(), reason=label)
                assert info.value.code == grpc.StatusCode.UNAUTHENTICATED, label
        async with ConfigClient(svc.addr, token=TOKENS["ci"][1], timeout_s=5) as plain:  # no TLS
            with pytest.raises(ConfigApiError) as info:
                await plain.apply(doc_yaml(), reason="plaintext")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        async with ConfigClient(svc.addr, token=TOKENS["ci"][1], **tls) as ci:
            assert await revision(ci) == 0  # nothing of the refused calls was applied
            r = await ci.apply(doc_yaml(), reason="ci")
            assert r.committed and r.info.actor == "token:ci"
        assert 'vgw_config_api_auth_failures_total{identity="anonymous",reason="unauthenticated"}' in svc.metrics()
    finally:
        svc.stop(kill=True)
