"""``vgwctl security init``: layout, modes, idempotency, --force, bad arguments, and the docs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from vgw.cli.main import main
from vgw.security import identities, init_dir, pki
from vgw.security.credentials import public_nkey, token_hash
from vgw.security.docs import extract, render
from vgw.security.identities import HC_MEMBERS_BUCKET, find, nats_permissions

REPO = Path(__file__).resolve().parents[2]
IDS = ["config", "healthcheck", "monitor", "routectl-node-a", "shim-node-a", "operator", "admin", "subscriber"]


def files(d: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (mode, mtime_ns) of every file."""
    return {
        str(p.relative_to(d)): (stat.S_IMODE(p.stat().st_mode), p.stat().st_mtime_ns)
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def run(*args: str) -> int:
    return main(["security", "init", *args])


def test_layout_and_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "sec"
    assert run(str(d), "--node", "node-a") == 0
    assert "created" in capsys.readouterr().out
    got = files(d)
    for rel in ("ca/ca.key", "nats/server.key", "config-api/server.key", "config-api/tokens.json"):
        assert got[rel][0] == 0o600, rel
    for rel in ("ca/ca.crt", "nats/server.crt", "nats/tls.conf", "nats/authorization.conf", "nats/nats-server.conf"):
        assert got[rel][0] == 0o644, rel
    for ident in IDS:
        home = f"identities/{ident}"
        assert got[f"{home}/nkey.seed"][0] == 0o600
        assert got[f"{home}/tls.key"][0] == 0o600
        assert got[f"{home}/tls.crt"][0] == 0o644
        assert (f"{home}/config-api.token" in got) == (ident in ("admin", "operator", "subscriber"))
        cert = x509.load_pem_x509_certificate((d / home / "tls.crt").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident
        ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        assert ou == {"admin": "admin", "operator": "operator", "subscriber": "reader"}.get(ident, "service")
        env = dict(
            line.split("=", 1) for line in (d / home / "vgw.env").read_text().splitlines() if not line.startswith("#")
        )
        assert env["VGW_NATS_INBOX_PREFIX"] == f"_INBOX_{ident}"
        assert env["VGW_NATS_NKEY_SEED"] == f"{d.resolve()}/{home}/nkey.seed"
        assert env["VGW_NATS_URL"] == "tls://127.0.0.1:4222"
    # The NATS users are the identities' public nkeys; tokens.json holds hashes of the token files.
    auth = (d / "nats/authorization.conf").read_text()
    for ident in IDS:
        nkey = public_nkey((d / f"identities/{ident}/nkey.seed").read_bytes())
        assert nkey is not None and f'"{nkey}"' in auth
    tokens = json.loads((d / "config-api/tokens.json").read_text())["tokens"]
    assert {(t["name"], t["role"]) for t in tokens} == {
        ("admin", "admin"),
        ("operator", "operator"),
        ("subscriber", "reader"),
    }
    for t in tokens:
        assert t["sha256"] == token_hash((d / f"identities/{t['name']}/config-api.token").read_text().strip())
    # Server certificates: the default SANs, signed by the CA.
    ca = x509.load_pem_x509_certificate((d / "ca/ca.crt").read_bytes())
    srv = x509.load_pem_x509_certificate((d / "nats/server.crt").read_bytes())
    srv.verify_directly_issued_by(ca)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert f'ca_file: "{d.resolve()}/ca/ca.crt"' in (d / "nats/tls.conf").read_text()


def test_second_run_is_up_to_date_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "sec"
    assert run(str(d), "--node", "node-a", "--node", "node-b") == 0
    before = files(d)
    capsys.readouterr()
    assert run(str(d), "--node", "node-b", "--node", "node-a") == 0
    assert "up to date" in capsys.readouterr().out
    assert files(d) == before


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "sec"
    assert run(str(d), "--node", "node-a") == 0
    before = files(d)
    capsys.readouterr()
    # Another SAN for NATS, another node: both would change existing files.
    assert run(str(d), "--node", "node-a", "--nats-host", "nats.example") == 1
    err = capsys.readouterr().err
    assert "refused" in err and "nats/server.crt" in err
    assert run(str(d), "--node", "node-a", "--node", "node-b") == 1
    assert "authorization.conf" in capsys.readouterr().err
    assert files(d) == before
    assert not (d / "identities/routectl-node-b").exists()


def test_force_keeps_the_ca_and_fitting_keys_and_adds_a_node(tmp_path: Path) -> None:
    d = tmp_path / "sec"
    assert run(str(d), "--node", "node-a") == 0
    before = files(d)
    r = init_dir(d, ["node-a", "node-b"], nats_hosts=["nats.example", "10.0.0.1"], force=True)
    assert not r.refused
    after = files(d)
    # The CA and every identity's key, certificate, seed and token are untouched.
    kept = [p for p in before if p.startswith(("ca/", "identities/")) and not p.endswith("vgw.env")]
    assert kept and all(after[p] == before[p] for p in kept)
    # The new node's identities exist; NATS's certificate has the new SANs, from the same CA.
    for ident in ("routectl-node-b", "shim-node-b"):
        assert (d / f"identities/{ident}/nkey.seed").exists()
    assert after["nats/server.crt"] != before["nats/server.crt"]
    assert after["config-api/server.crt"] == before["config-api/server.crt"]
    ca = pki.load_pair((d / "ca/ca.crt").read_bytes(), (d / "ca/ca.key").read_bytes())
    srv = pki.load_pair((d / "nats/server.crt").read_bytes(), (d / "nats/server.key").read_bytes())
    assert ca is not None and srv is not None
    assert pki.cert_fits(srv, ca, cn="vgw-nats", hosts=["nats.example", "10.0.0.1"])
    assert "routectl-node-b" in (d / "nats/authorization.conf").read_text()
    # And now it is up to date again.
    again = init_dir(d, ["node-a", "node-b"], nats_hosts=["nats.example", "10.0.0.1"])
    assert not again.written and not again.refused


def test_force_replaces_a_broken_key(tmp_path: Path) -> None:
    d = tmp_path / "sec"
    init_dir(d, ["node-a"])
    (d / "identities/shim-node-a/tls.key").write_text("garbage")
    assert init_dir(d, ["node-a"]).refused == ["identities/shim-node-a/tls.crt", "identities/shim-node-a/tls.key"]
    init_dir(d, ["node-a"], force=True)
    pair = pki.load_pair(
        (d / "identities/shim-node-a/tls.crt").read_bytes(), (d / "identities/shim-node-a/tls.key").read_bytes()
    )
    assert pair is not None
    assert stat.S_IMODE((d / "identities/shim-node-a/tls.key").stat().st_mode) == 0o600


def test_nodes_from_a_config_document(tmp_path: Path) -> None:
    r = init_dir(tmp_path / "sec", config_file=REPO / "docs" / "config-example.yaml")
    assert {"routectl-node-a", "routectl-node-b", "shim-node-a", "shim-node-b"} <= set(r.identities)


@pytest.mark.parametrize(
    "args",
    [
        [],  # no nodes
        ["--node", "bad.name"],
        ["--node", "a", "--nats-host", "not a host"],
        ["--node", "a", "--config-api-host", "bad_host!"],
        ["--node", "a", "--nats-url", "http://x:4222"],
        ["--node", "a", "--path-prefix", "relative/path"],
        ["--node", "a", "--path-prefix", "/with space"],
        ["--node", "a", "--store-dir", "data"],
        ["--node", "a", "--config", "/nonexistent.yaml"],
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "sec"
    assert run(str(d), *args) == 2
    assert "vgwctl security init:" in capsys.readouterr().err
    assert not d.exists()


def test_path_prefix_and_url_go_into_vgw_env_and_tls_conf(tmp_path: Path) -> None:
    d = tmp_path / "sec"
    init_dir(d, ["n1"], path_prefix="/etc/vgw/security", nats_url="tls://nats.vgw.svc:4333", store_dir="/var/lib/n")
    env = (d / "identities/config/vgw.env").read_text()
    assert "VGW_NATS_URL=tls://nats.vgw.svc:4333\n" in env
    assert "VGW_CONFIG_TOKENS_FILE=/etc/vgw/security/config-api/tokens.json\n" in env
    assert "/etc/vgw/security/nats/server.crt" in (d / "nats/tls.conf").read_text()
    conf = (d / "nats/nats-server.conf").read_text()
    assert 'listen: "0.0.0.0:4333"' in conf and 'store_dir: "/var/lib/n"' in conf


def test_matrix_least_privilege() -> None:
    idents = identities(["node-a", "node-b"])
    pubs = {i.name: nats_permissions(i)[0] for i in idents}
    for name, pub in pubs.items():
        assert "$JS.API.>" not in pub and not any(".STREAM.DELETE." in s or ".STREAM.PURGE." in s for s in pub)
        assert not any(s.startswith("_INBOX") for s in pub)
        assert not any(".STREAM.UPDATE." in s for s in pub), name
        if name != "config":
            assert not any(s.startswith("$KV.vgw_config.") for s in pub), name
            assert "$JS.API.STREAM.CREATE.KV_vgw_config" not in pub
    assert "$KV.vgw_routes.node-a.>" in pubs["routectl-node-a"]
    assert not any("node-b" in s for s in pubs["routectl-node-a"] + pubs["shim-node-a"])
    assert nats_permissions(find(idents, "subscriber"))[1] == ["_INBOX_subscriber.>", "vgw.v1.>"]


def test_members_bucket_matches_the_healthcheck_default() -> None:
    from services.healthcheck.main import HealthcheckSettings

    assert HealthcheckSettings.model_fields["hc_members_bucket"].default == HC_MEMBERS_BUCKET


def test_docs_matrix_is_fresh() -> None:
    doc = (REPO / "docs" / "security.md").read_text()
    assert extract(doc) == render(), "docs/security.md is stale: run `python -m vgw.security.docs docs/security.md`"
