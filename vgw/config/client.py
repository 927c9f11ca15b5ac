"""An asyncio client of ``vgw.config.v1.ConfigService`` (used by vgwctl, tests and services).

Errors come back as :class:`ConfigApiError` with the gRPC code, the message, the field violations
of an ``INVALID_ARGUMENT`` (``google.rpc.BadRequest``: path + reason) and, for a
``FAILED_PRECONDITION``, the store's current revision. Warnings about an accepted document (valid
but likely wrong, ``vgw.config.validate.document_warnings``) come as ``x-vgw-warning`` trailing
metadata, one ``path: reason`` per entry: :meth:`ConfigClient.apply_with_warnings` returns them.

Credentials (docs/config.md, "Authentication and roles"): a client certificate and key (mTLS; the
server takes the role from its OU and the identity from its CN) and/or a bearer token. TLS is used
when a CA, a client certificate or ``tls=True`` is given. The ``x-vgw-actor`` header is only a
claim: the server records it (as ``local:<actor>``) only when it has no authentication configured.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from vgw.config.model import Limits
from vgw.config.v1 import config_pb2 as pb

SERVICE = "vgw.config.v1.ConfigService"
ACTOR_HEADER = "x-vgw-actor"
CURRENT_REVISION_HEADER = "x-vgw-current-revision"
WARNING_HEADER = "x-vgw-warning"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Resp = TypeVar("Resp", bound=Message)


@dataclass
class Violation:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


@dataclass
class ConfigApiError(Exception):
    code: grpc.StatusCode
    message: str
    violations: list[Violation] = field(default_factory=list)
    current_revision: int | None = None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


_TOO_LARGE = re.compile(r"(Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


def _clearer(code: grpc.StatusCode, details: str) -> str:
    """gRPC's own wording for a request over a size limit, said in VGW's terms."""
    m = _TOO_LARGE.search(details) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if m is None:
        return details
    size, limit = int(m.group(2)), int(m.group(3))
    if m.group(1) == "Received":
        return (
            f"the request is {size} bytes; the config service accepts at most {limit} bytes "
            "(VGW_CONFIG_MAX_REQUEST_BYTES on the server)"
        )
    return f"the request is {size} bytes; this client sends at most {limit} bytes"


def _check_size(document: bytes) -> None:
    """The server's own verdict on a document over the size limit, without sending it."""
    if len(document) > Limits.DOCUMENT_BYTES:
        reason = f"document is {len(document)} bytes; the limit is {Limits.DOCUMENT_BYTES} bytes"
        message = f"invalid configuration: document: {reason}"
        raise ConfigApiError(grpc.StatusCode.INVALID_ARGUMENT, message, [Violation("document", reason)])


def _error_from(exc: grpc.aio.AioRpcError) -> ConfigApiError:
    err = ConfigApiError(exc.code(), _clearer(exc.code(), exc.details() or ""))
    for key, value in exc.trailing_metadata() or ():
        if key == CURRENT_REVISION_HEADER and isinstance(value, str) and value.isdigit():
            err.current_revision = int(value)
        elif key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    detail.Unpack(br)
                    err.violations.extend(Violation(v.field, v.description) for v in br.field_violations)
                elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                    pf = error_details_pb2.PreconditionFailure()
                    detail.Unpack(pf)
                    for v in pf.violations:
                        if v.type == "REVISION" and v.description.isdigit():
                            err.current_revision = int(v.description)
    return err


class ConfigClient:
    """``async with ConfigClient(addr) as c: await c.apply(...)``.

    ``tls_ca``: the CA of the server's certificate (else the system roots); ``client_cert`` and
    ``client_key``: this client's certificate (mTLS); ``token``: a bearer token; ``server_name``:
    the name to check the server's certificate against when it differs from ``addr``'s host."""

    def __init__(
        self,
        addr: str,
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        tls: bool = False,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        server_name: str | None = None,
        actor: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if (client_cert is None) != (client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        self.tls = tls or tls_ca is not None or client_cert is not None
        if self.tls:
            root = tls_ca.read_bytes() if tls_ca is not None else None
            key = client_key.read_bytes() if client_key is not None else None
            chain = client_cert.read_bytes() if client_cert is not None else None
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            creds = grpc.ssl_channel_credentials(root, key, chain)
            self.channel = grpc.aio.secure_channel(addr, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(addr, options=options)
        self.addr = addr
        self.timeout_s = timeout_s
        self._metadata: list[tuple[str, str]] = [(ACTOR_HEADER, actor or default_actor())]
        if token:
            self._metadata.append(("authorization", f"Bearer {token}"))

    async def __aenter__(self) -> ConfigClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: str, request: Message, response: type[Resp], timeout_s: float | None = None) -> Resp:
        result, _ = await self._call_trailing(method, request, response, timeout_s)
        return result

    async def _call_trailing(
        self, method: str, request: Message, response: type[Resp], timeout_s: float | None = None
    ) -> tuple[Resp, list[tuple[str, str]]]:
        """One unary call: the reply and its trailing metadata (text values)."""
        multi: grpc.aio.UnaryUnaryMultiCallable[Message, Resp] = self.channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        call = multi(request, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        try:
            result: Resp = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise _error_from(exc) from None
        return result, [(k, v) for k, v in (trailing or ()) if isinstance(v, str)]

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        await self.channel.channel_ready()

    async def apply(
        self,
        document: bytes,
        *,
        dry_run: bool = False,
        expected_revision: int | None = None,
        reason: str = "",
        fmt: int = pb.DOCUMENT_FORMAT_UNSPECIFIED,
    ) -> pb.ApplyResponse:
        r, _ = await self.apply_with_warnings(
            document, dry_run=dry_run, expected_revision=expected_revision, reason=reason, fmt=fmt
        )
        return r

    async def apply_with_warnings(
        self,
        document: bytes,
        *,
        dry_run: bool = False,
        expected_revision: int | None = None,
        reason: str = "",
        fmt: int = pb.DOCUMENT_FORMAT_UNSPECIFIED,
    ) -> tuple[pb.ApplyResponse, list[str]]:
        """:meth:`apply`, and the warnings about the (accepted) document as ``path: reason``."""
        _check_size(document)
        req = pb.ApplyRequest(document=document, dry_run=dry_run, reason=reason, format=fmt)  # type: ignore[arg-type]
        if expected_revision is not None:
            req.expected_revision = expected_revision
        r, trailing = await self._call_trailing("Apply", req, pb.ApplyResponse)
        return r, [v for k, v in trailing if k == WARNING_HEADER]

    async def get(self, revision: int = 0, fmt: int = pb.DOCUMENT_FORMAT_YAML) -> pb.GetResponse:
        return await self._call("Get", pb.GetRequest(revision=revision, format=fmt), pb.GetResponse)  # type: ignore[arg-type]

    async def list(self, kind: str, **filters: Any) -> pb.ListResponse:
        return await self._call("List", pb.ListRequest(kind=kind, **filters), pb.ListResponse)

    async def diff(self, document: bytes = b"", *, from_revision: int = 0, to_revision: int = 0) -> pb.DiffResponse:
        _check_size(document)
        req = pb.DiffRequest(document=document, from_revision=from_revision, to_revision=to_revision)
        return await self._call("Diff", req, pb.DiffResponse)

    async def history(self, limit: int = 20, before: int = 0) -> pb.HistoryResponse:
        return await self._call("History", pb.HistoryRequest(limit=limit, before=before), pb.HistoryResponse)

    async def rollback(
        self, revision: int, *, reason: str = "", expected_revision: int | None = None
    ) -> pb.ApplyResponse:
        req = pb.RollbackRequest(revision=revision, reason=reason)
        if expected_revision is not None:
            req.expected_revision = expected_revision
        return await self._call("Rollback", req, pb.ApplyResponse)

    async def set_backend_state(
        self, backend: str, state: int, *, service: str = "", reason: str = "", expected_revision: int | None = None
    ) -> pb.ApplyResponse:
        req = pb.SetBackendStateRequest(service=service, backend=backend, state=state, reason=reason)  # type: ignore[arg-type]
        if expected_revision is not None:
            req.expected_revision = expected_revision
        return await self._call("SetBackendState", req, pb.ApplyResponse)

    async def set_node_state(
        self,
        node: str,
        state: int,
        *,
        reason: str = "",
        expected_revision: int | None = None,
        cluster: str = "",
        drain_timeout_s: float | None = None,
        drain_threshold: int | None = None,
        force: bool = False,
    ) -> pb.ApplyResponse:
        """Isolate, drain or restore ``node`` -- or, with ``node=""`` and ``cluster``, every node of
        that cluster. The drain options go with ``NODE_STATE_DRAINING`` only."""
        req = pb.SetNodeStateRequest(node=node, state=state, reason=reason, cluster=cluster, force=force)  # type: ignore[arg-type]
        if expected_revision is not None:
            req.expected_revision = expected_revision
        if drain_timeout_s is not None:
            req.drain.timeout_s = drain_timeout_s
        if drain_threshold is not None:
            req.drain.threshold = drain_threshold
        return await self._call("SetNodeState", req, pb.ApplyResponse)

    async def watch(self, *, include_document: bool = False) -> AsyncIterator[pb.WatchResponse]:
        call: grpc.aio.UnaryStreamMultiCallable[pb.WatchRequest, pb.WatchResponse] = self.channel.unary_stream(
            f"/{SERVICE}/Watch",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.WatchResponse.FromString,
        )
        stream = call(pb.WatchRequest(include_document=include_document), metadata=self._metadata)
        try:
            async for msg in stream:
                yield msg
        except grpc.aio.AioRpcError as exc:
            raise _error_from(exc) from None
        finally:
            stream.cancel()
