"""Test certificates for the config API, from the same code `vgwctl security init` uses
(vgw.security.pki): a CA, server certificates, client certificates with an OU role (or none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vgw.security.pki import KeyPair, new_ca, new_client, new_server


@dataclass
class Pki:
    directory: Path
    ca_cert: Path
    ca: KeyPair

    @classmethod
    def create(cls, directory: Path, name: str = "vgw test CA") -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = new_ca(name)
        path = directory / "ca.crt"
        path.write_bytes(ca.cert_pem)
        return cls(directory, path, ca)

    def issue(self, cn: str, *, ou: str | None = None, server_names: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A certificate signed by this CA, (cert path, key path): a server certificate for
        ``server_names`` when given, else a client certificate CN=cn, OU=ou."""
        pair = new_server(self.ca, cn, server_names) if server_names else new_client(self.ca, cn, ou)
        safe = cn.replace("/", "_")
        cert_path, key_path = self.directory / f"{safe}.crt", self.directory / f"{safe}.key"
        cert_path.write_bytes(pair.cert_pem)
        key_path.write_bytes(pair.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path
