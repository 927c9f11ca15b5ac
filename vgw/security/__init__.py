"""Secure by default: identities, the NATS permission matrix, the deployment's PKI and
``vgwctl security init`` (docs/security.md)."""

from .identities import Grants, Identity, identities, nats_permissions
from .initdir import DEFAULT_HOSTS, DEFAULT_NATS_URL, FileResult, InitError, InitResult, Status, init_dir

__all__ = [
    "DEFAULT_HOSTS",
    "DEFAULT_NATS_URL",
    "FileResult",
    "Grants",
    "Identity",
    "InitError",
    "InitResult",
    "Status",
    "identities",
    "init_dir",
    "nats_permissions",
]
