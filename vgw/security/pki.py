"""The deployment's private CA and its certificates (ECDSA P-256).

One CA signs everything: the NATS server's and the config API's server certificates, and one
client certificate per identity (CN = identity, OU = its config API role). NATS and the config API
both trust only this CA for clients, so a certificate from anywhere else is refused at the TLS
handshake.

Existing material is reused when it still fits (:func:`cert_fits`): a re-run must not rotate keys
that every deployed process holds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 730
# Re-issue (with --force) once less than this is left, so a deployment never runs into expiry.
RENEW_BEFORE = dt.timedelta(days=30)
ORG = "VGW"


@dataclass(frozen=True, slots=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_pair(cert_pem: bytes, key_pem_bytes: bytes) -> KeyPair | None:
    """The pair, or None if either does not parse, the key is not P-256, or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem_bytes, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        return None
    return KeyPair(key, cert)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little back-dating absorbs clock skew between the host that signs and those that verify.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def new_ca(cn: str = "VGW CA") -> KeyPair:
    key = new_key()
    name = _name(cn)
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _signed(builder: x509.CertificateBuilder, ca: KeyPair, eku: x509.ObjectIdentifier) -> x509.Certificate:
    return (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def new_server(ca: KeyPair, cn: str, hosts: Sequence[str], key: ec.EllipticCurvePrivateKey | None = None) -> KeyPair:
    """A server certificate valid for ``hosts`` (DNS names or IP addresses, as SANs)."""
    key = key or new_key()
    b = _builder(_name(cn), ca.cert.subject, key, LEAF_DAYS).add_extension(_san(hosts), critical=False)
    return KeyPair(key, _signed(b, ca, ExtendedKeyUsageOID.SERVER_AUTH))


def new_client(ca: KeyPair, identity: str, role: str | None, key: ec.EllipticCurvePrivateKey | None = None) -> KeyPair:
    """A client certificate: CN = the identity, OU = its config API role ("service" for services;
    None: no OU, which the config API takes as no role)."""
    key = key or new_key()
    b = _builder(_name(identity, role), ca.cert.subject, key, LEAF_DAYS)
    return KeyPair(key, _signed(b, ca, ExtendedKeyUsageOID.CLIENT_AUTH))


def _hosts_of(cert: x509.Certificate) -> set[str] | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def _canonical_hosts(hosts: Sequence[str]) -> set[str]:
    out = set()
    for h in hosts:
        try:
            out.add(str(ipaddress.ip_address(h)))
        except ValueError:
            out.add(h)
    return out


def ca_fits(ca: KeyPair) -> bool:
    """A CA we may keep: self-signed, a CA, and not about to expire."""
    return ca.cert.not_valid_after_utc - _now() > RENEW_BEFORE and _signed_by(ca.cert, ca.cert)


def cert_fits(
    pair: KeyPair, ca: KeyPair, *, cn: str, ou: str | None = None, hosts: Sequence[str] | None = None
) -> bool:
    """Whether an existing leaf still is what we would issue: signed by this CA, same subject (and
    SANs for a server), and not about to expire."""
    c = pair.cert
    if c.not_valid_after_utc - _now() <= RENEW_BEFORE or not _signed_by(c, ca.cert):
        return False
    if c.subject != _name(cn, ou):
        return False
    return hosts is None or _hosts_of(c) == _canonical_hosts(hosts)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
