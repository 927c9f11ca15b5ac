"""``vgwctl security init DIR``: everything a secured deployment needs, in one directory.

The run is planned in full before anything is written: each file's new content is computed and
compared with what is there. Keys, certificates, seeds and tokens that exist and still fit are
reused (re-issuing them would lock out every deployed process); files derived from them (the NATS
configuration, ``tokens.json``, ``vgw.env``) are re-rendered and compared byte for byte. So:

* same inputs -> nothing written ("up to date");
* a file would change -> refused, nothing written, unless ``force`` (then only what is new or
  changed is written, the CA and every still-fitting key are kept);
* each file is written atomically (temporary file, fsync, rename) with its final mode from the
  start: 0600 for private keys, seeds and tokens, 0644 for the rest.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from . import credentials, natsconf, pki
from .identities import API_ROLES, Identity, identities

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_NATS_URL = "tls://127.0.0.1:4222"
DEFAULT_NATS_PORT = 4222
SECRET = 0o600
PUBLIC = 0o644
_HOST_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_SAFE_PATH_RE = re.compile(r"^/[^\s\"'\\$`]*$")


class InitError(ValueError):
    """Bad inputs: nothing was written."""


class Status(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    KEPT = "kept"
    """An existing key, certificate, seed or token that still fits, reused."""
    UNCHANGED = "up to date"


@dataclass(frozen=True, slots=True)
class FileResult:
    path: str
    """Relative to the directory."""
    status: Status


@dataclass(slots=True)
class InitResult:
    directory: Path
    files: list[FileResult] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Files that would change: nothing was written (run again with force)."""
    stale: list[str] = field(default_factory=list)
    """Identity directories no identity uses any more (left in place)."""
    identities: list[str] = field(default_factory=list)

    def with_status(self, *statuses: Status) -> list[str]:
        return [f.path for f in self.files if f.status in statuses]

    @property
    def written(self) -> bool:
        return not self.refused and bool(self.with_status(Status.CREATED, Status.UPDATED))


@dataclass(frozen=True, slots=True)
class _Planned:
    content: bytes
    mode: int
    secret_material: bool


class _Plan:
    """New content per relative path, and whether it is reused secret material."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, _Planned] = {}

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise InitError(f"cannot read {self.root / rel}: {exc}") from exc

    def add(self, rel: str, content: bytes, mode: int, *, secret_material: bool = False) -> None:
        self.files[rel] = _Planned(content, mode, secret_material)

    def status(self, rel: str) -> Status:
        p = self.files[rel]
        path = self.root / rel
        old = self.read(rel)
        if old is None:
            return Status.CREATED
        if old != p.content or (path.stat().st_mode & 0o777) != p.mode:
            return Status.UPDATED
        return Status.KEPT if p.secret_material else Status.UNCHANGED


def init_dir(
    directory: str | os.PathLike[str],
    nodes: Iterable[str] = (),
    *,
    config_file: str | os.PathLike[str] | None = None,
    nats_hosts: Sequence[str] = (),
    config_api_hosts: Sequence[str] = (),
    nats_url: str = DEFAULT_NATS_URL,
    path_prefix: str | None = None,
    store_dir: str | None = None,
    nats_listen_host: str = "0.0.0.0",  # all interfaces: TLS with client certificates is required
    force: bool = False,
) -> InitResult:
    """Create or bring up to date a security directory (layout: docs/security.md).

    Raises :class:`InitError` on bad inputs (nothing written). Returns with ``refused`` set when
    files would change and ``force`` is false (nothing written either).
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InitError(f"{root} exists and is not a directory")
    node_ids = _nodes(nodes, config_file)
    nats_hosts = _hosts(nats_hosts or DEFAULT_HOSTS, "--nats-host")
    api_hosts = _hosts(config_api_hosts or DEFAULT_HOSTS, "--config-api-host")
    port = _nats_port(nats_url)
    prefix = path_prefix if path_prefix is not None else str(root.resolve())
    if not _SAFE_PATH_RE.fullmatch(prefix):
        raise InitError(f"--path-prefix {prefix!r} must be an absolute path without spaces, quotes or '$'")
    prefix = prefix.rstrip("/") or "/"
    store = store_dir if store_dir is not None else f"{prefix}/nats/data"
    if not _SAFE_PATH_RE.fullmatch(store):
        raise InitError(f"--store-dir {store!r} must be an absolute path without spaces, quotes or '$'")
    listen = f"[{nats_listen_host}]:{port}" if ":" in nats_listen_host else f"{nats_listen_host}:{port}"

    idents = identities(node_ids)
    plan = _Plan(root)
    ca = _ca(plan)
    _server_pair(plan, ca, "nats/server", "vgw-nats", nats_hosts)
    _server_pair(plan, ca, "config-api/server", "vgw-config-api", api_hosts)
    users: list[natsconf.User] = []
    tokens: list[dict[str, str]] = []
    for ident in idents:
        users.append(natsconf.User(ident, _seed(plan, ident)))
        _client_pair(plan, ca, ident)
        if ident.has_api_token:
            token = _token(plan, ident)
            tokens.append({"name": ident.name, "role": ident.api_role, "sha256": credentials.token_hash(token)})
        plan.add(f"identities/{ident.name}/vgw.env", _env(ident, prefix, nats_url).encode(), PUBLIC)

    def at(rel: str) -> str:
        return f"{prefix}/{rel}"

    plan.add("nats/authorization.conf", natsconf.authorization(users).encode(), PUBLIC)
    plan.add(
        "nats/tls.conf", natsconf.tls(at("nats/server.crt"), at("nats/server.key"), at("ca/ca.crt")).encode(), PUBLIC
    )
    plan.add("nats/nats-server.conf", natsconf.server(listen, store).encode(), PUBLIC)
    # Hashes of random 256-bit tokens are not secrets, but who holds which role is nobody else's business.
    plan.add("config-api/tokens.json", (json.dumps({"tokens": tokens}, indent=2) + "\n").encode(), SECRET)

    result = InitResult(root, identities=[i.name for i in idents])
    result.files = [FileResult(rel, plan.status(rel)) for rel in sorted(plan.files)]
    result.stale = _stale(root, {i.name for i in idents})
    changed = result.with_status(Status.UPDATED)
    if changed and not force:
        result.refused = changed
        return result
    for f in result.files:
        if f.status in (Status.CREATED, Status.UPDATED):
            p = plan.files[f.path]
            _write_atomic(root / f.path, p.content, p.mode)
    return result


# --- inputs -------------------------------------------------------------------------------------


def _nodes(nodes: Iterable[str], config_file: str | os.PathLike[str] | None) -> list[str]:
    from vgw.naming import TokenError, check_name

    out: list[str] = []
    for n in nodes:
        try:
            out.append(check_name(n))
        except TokenError as exc:
            raise InitError(f"--node: {exc}") from exc
    if config_file is not None:
        out += _config_nodes(Path(config_file))
    if not out:
        raise InitError("no nodes: give --node NAME (repeatable) or --config FILE")
    return sorted(set(out))


def _config_nodes(path: Path) -> list[str]:
    from vgw.config.validate import ConfigInvalid, load_document

    try:
        doc = load_document(path.read_bytes())
    except OSError as exc:
        raise InitError(f"--config {path}: {exc.strerror or exc}") from exc
    except ConfigInvalid as exc:
        raise InitError(f"--config {path} is not a valid config document: {exc}") from exc
    if not doc.nodes:
        raise InitError(f"--config {path} has no nodes")
    return [n.id for n in doc.nodes]


def _hosts(hosts: Sequence[str], option: str) -> list[str]:
    out: list[str] = []
    for h in hosts:
        try:
            out.append(str(ipaddress.ip_address(h)))
            continue
        except ValueError:
            pass
        if not _HOST_RE.fullmatch(h) or len(h) > 253:
            raise InitError(f"{option} {h!r} is neither an IP address nor a DNS name")
        out.append(h.lower())
    return list(dict.fromkeys(out))


def _nats_port(url: str) -> int:
    """The port of the first URL (the example server listens there); every URL must be TLS-able."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise InitError("--nats-url is empty")
    ports = []
    for u in urls:
        if not u.startswith(("tls://", "nats://")):
            raise InitError(f"--nats-url {u!r} must start with tls:// (or nats://, upgraded to TLS)")
        try:
            parts = urlsplit(u)
            ports.append(parts.port or DEFAULT_NATS_PORT)
        except ValueError as exc:
            raise InitError(f"--nats-url {u!r}: {exc}") from exc
        if not parts.hostname:
            raise InitError(f"--nats-url {u!r} has no host")
    return ports[0]


# --- material -----------------------------------------------------------------------------------


def _pair(plan: _Plan, base: str) -> pki.KeyPair | None:
    cert, key = plan.read(f"{base}.crt"), plan.read(f"{base}.key")
    return pki.load_pair(cert, key) if cert is not None and key is not None else None


def _add_pair(plan: _Plan, base: str, pair: pki.KeyPair, *, kept: bool) -> None:
    plan.add(f"{base}.crt", pair.cert_pem, PUBLIC, secret_material=kept)
    plan.add(f"{base}.key", pair.key_pem, SECRET, secret_material=kept)


def _ca(plan: _Plan) -> pki.KeyPair:
    old = _pair(plan, "ca/ca")
    if old is not None and pki.ca_fits(old):
        # Re-encode from the parsed objects only if the bytes differ: keep the files as they are.
        plan.add("ca/ca.crt", plan.read("ca/ca.crt") or old.cert_pem, PUBLIC, secret_material=True)
        plan.add("ca/ca.key", plan.read("ca/ca.key") or old.key_pem, SECRET, secret_material=True)
        return old
    ca = pki.new_ca()
    _add_pair(plan, "ca/ca", ca, kept=False)
    return ca


def _keep(plan: _Plan, base: str) -> None:
    plan.add(f"{base}.crt", plan.read(f"{base}.crt") or b"", PUBLIC, secret_material=True)
    plan.add(f"{base}.key", plan.read(f"{base}.key") or b"", SECRET, secret_material=True)


def _server_pair(plan: _Plan, ca: pki.KeyPair, base: str, cn: str, hosts: Sequence[str]) -> None:
    old = _pair(plan, base)
    if old is not None and pki.cert_fits(old, ca, cn=cn, hosts=hosts):
        _keep(plan, base)
    else:
        _add_pair(plan, base, pki.new_server(ca, cn, hosts), kept=False)


def _client_pair(plan: _Plan, ca: pki.KeyPair, ident: Identity) -> None:
    base = f"identities/{ident.name}/tls"
    old = _pair(plan, base)
    if old is not None and pki.cert_fits(old, ca, cn=ident.name, ou=ident.api_role):
        _keep(plan, base)
    else:
        _add_pair(plan, base, pki.new_client(ca, ident.name, ident.api_role), kept=False)


def _seed(plan: _Plan, ident: Identity) -> str:
    rel = f"identities/{ident.name}/nkey.seed"
    old = plan.read(rel)
    public = credentials.public_nkey(old) if old is not None else None
    if old is not None and public is not None:
        plan.add(rel, old, SECRET, secret_material=True)
        return public
    seed = credentials.new_seed()
    plan.add(rel, seed, SECRET)
    public = credentials.public_nkey(seed)
    assert public is not None
    return public


def _token(plan: _Plan, ident: Identity) -> str:
    rel = f"identities/{ident.name}/config-api.token"
    old = plan.read(rel)
    token = credentials.token_ok(old) if old is not None else None
    if old is not None and token is not None:
        plan.add(rel, old, SECRET, secret_material=True)
        return token
    token = credentials.new_token()
    plan.add(rel, token.encode(), SECRET)
    return token


def _env(ident: Identity, prefix: str, nats_url: str) -> str:
    home = f"{prefix}/identities/{ident.name}"
    ca = f"{prefix}/ca/ca.crt"
    env = {
        "VGW_NATS_URL": nats_url,
        "VGW_NATS_TLS_CA": ca,
        "VGW_NATS_TLS_CERT": f"{home}/tls.crt",
        "VGW_NATS_TLS_KEY": f"{home}/tls.key",
        "VGW_NATS_NKEY_SEED": f"{home}/nkey.seed",
        "VGW_NATS_INBOX_PREFIX": ident.inbox_prefix,
    }
    if ident.api_role in API_ROLES:
        env |= {
            "VGW_CONFIG_TLS_CA": ca,
            "VGW_CONFIG_CLIENT_CERT": f"{home}/tls.crt",
            "VGW_CONFIG_CLIENT_KEY": f"{home}/tls.key",
            "VGW_CONFIG_TOKEN_FILE": f"{home}/config-api.token",
        }
    if ident.kind == "config":
        env |= {
            "VGW_CONFIG_TLS_CERT": f"{prefix}/config-api/server.crt",
            "VGW_CONFIG_TLS_KEY": f"{prefix}/config-api/server.key",
            "VGW_CONFIG_TLS_CLIENT_CA": ca,
            "VGW_CONFIG_TOKENS_FILE": f"{prefix}/config-api/tokens.json",
        }
    head = f"# {ident.name} ({ident.kind}): generated by `vgwctl security init`\n"
    return head + "".join(f"{k}={v}\n" for k, v in env.items())


def _stale(root: Path, names: set[str]) -> list[str]:
    base = root / "identities"
    if not base.is_dir():
        return []
    return sorted(f"identities/{p.name}" for p in base.iterdir() if p.is_dir() and p.name not in names)


def _write_atomic(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with its final mode: a private key is never readable by others, not even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
