"""``vgw.config.v1.ConfigService``: the gRPC handlers over the config store.

Handlers are registered as generic handlers (no generated servicer code): each is wrapped so it
authenticates the caller and checks its role (:mod:`services.config.auth`), is counted and timed in
Prometheus, and turns :class:`ApiError` into a gRPC status with rich details
(``google.rpc.BadRequest`` for validation errors, ``google.rpc.PreconditionFailure`` plus
``x-vgw-current-revision`` for conflicts). An accepted document's warnings (``document_warnings``:
valid but likely wrong) go back as ``x-vgw-warning`` trailing metadata on Apply, one ``path: reason``
per entry, and are logged; they never refuse it. Secrets (BGP passwords) are masked in everything
returned (:mod:`services.config.secrets`).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import yaml
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from vgw.config.client import CURRENT_REVISION_HEADER, SERVICE, WARNING_HEADER
from vgw.config.diff import Diff, diff_documents
from vgw.config.model import (
    DRAIN_THRESHOLD_DEFAULT,
    DRAIN_TIMEOUT_DEFAULT_S,
    DRAIN_TIMEOUT_MAX_S,
    DRAIN_TIMEOUT_MIN_S,
    Backend,
    ConfigDocument,
    Limits,
    NodeDrain,
    Service,
    Vip,
    node_view,
)
from vgw.config.records import Encoded
from vgw.config.store import (
    Action,
    CommitResult,
    ConfigConflict,
    ConfigReader,
    ConfigStore,
    Manifest,
    RevisionNotFound,
)
from vgw.config.v1 import config_pb2 as pb
from vgw.config.validate import ConfigInvalid, Issue, document_warnings, load_document, scrub_issue, semantic_issues
from vgw.store import Change, Snapshot

from . import metrics
from .auth import Authenticator, AuthFailure, Identity
from .secrets import has_mask, mask_field, mask_value, unmask

log = logging.getLogger("vgw.config.api")
tracer = trace.get_tracer("vgw.config")

MAX_CHANGES = 5000
WARNINGS_METADATA_BYTES = 6000
"""Warnings sent back as trailing metadata, in bytes (gRPC clients refuse more than 8 KiB of it)."""
_BACKEND_STATES = {
    pb.BACKEND_STATE_ENABLED: "enabled",
    pb.BACKEND_STATE_DRAINING: "draining",
    pb.BACKEND_STATE_DISABLED: "disabled",
}
_NODE_STATES = {
    pb.NODE_STATE_ACTIVE: "active",
    pb.NODE_STATE_ISOLATED: "isolated",
    pb.NODE_STATE_DRAINING: "draining",
}
_YAML_DUMPER: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_IDENTITY: contextvars.ContextVar[Identity] = contextvars.ContextVar("vgw_config_identity")


class ApiError(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        issues: list[Issue] | None = None,
        current_revision: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.issues = issues or []
        self.current_revision = current_revision

    def status(self) -> grpc.Status:
        details: list[any_pb2.Any] = []
        if self.issues:
            br = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=i.path, description=i.reason) for i in self.issues
                ]
            )
            a = any_pb2.Any()
            a.Pack(br)
            details.append(a)
        if self.current_revision is not None:
            pf = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type="REVISION", subject="current", description=str(self.current_revision)
                    )
                ]
            )
            a = any_pb2.Any()
            a.Pack(pf)
            details.append(a)
        code_value = self.code.value[0]
        status = status_pb2.Status(code=code_value, message=self.message[:4096], details=details)
        return rpc_status.to_status(status)


def invalid(exc: ConfigInvalid) -> ApiError:
    issues = [scrub_issue(i) for i in exc.issues]
    n = len(issues)
    first = str(issues[0]) if issues else ""
    more = f" (and {n - 1} more)" if n > 1 else ""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid configuration: {first}{more}", issues=issues)


def warning_metadata(warnings: list[Issue]) -> tuple[tuple[str, str], ...]:
    """``x-vgw-warning`` entries for ``warnings`` (printable ASCII), within WARNINGS_METADATA_BYTES;
    a last entry counts those left out."""
    out: list[tuple[str, str]] = []
    size = 0
    for i, w in enumerate(warnings):
        text = "".join(c if " " <= c <= "~" else "?" for c in str(w))[:1000]
        if size + len(text) > WARNINGS_METADATA_BYTES - 100:
            out.append((WARNING_HEADER, f"... and {len(warnings) - i} more warnings (in the config service's log)"))
            break
        out.append((WARNING_HEADER, text))
        size += len(text) + len(WARNING_HEADER)
    return tuple(out)


def conflict(exc: ConfigConflict) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(exc), current_revision=exc.current)


# --- conversions -----------------------------------------------------------------------------------


def revision_info(m: Manifest) -> pb.RevisionInfo:
    ts = Timestamp()
    ts.FromDatetime(m.created_at)
    info = pb.RevisionInfo(
        revision=m.revision,
        previous_revision=m.previous_revision,
        action=m.action,
        actor=m.actor,
        reason=m.reason,
        created_at=ts,
        counts=pb.ChangeCounts(added=m.counts.added, removed=m.counts.removed, modified=m.counts.modified),
        changed=m.changed,
        changed_truncated=m.changed_truncated,
        services=m.services,
        backends=m.backends,
        bytes=m.bytes,
        chunks=len(set(m.chunks)),
    )
    if m.rolled_back_to is not None:
        info.rolled_back_to = m.rolled_back_to
    return info


def changes(diff: Diff) -> tuple[list[pb.Change], bool]:
    out = []
    for e in diff.entries[:MAX_CHANGES]:
        fields = []
        for c in e.changes:
            old, new = mask_field(c.field, c.old, c.new)
            fields.append(pb.FieldChange(field=c.field, old_json=json.dumps(old), new_json=json.dumps(new)))
        out.append(pb.Change(op=e.op, path=e.path, fields=fields))
    return out, len(diff.entries) > MAX_CHANGES


def counts(diff: Diff) -> pb.ChangeCounts:
    c = diff.counts()
    return pb.ChangeCounts(added=c["added"], removed=c["removed"], modified=c["modified"])


def apply_response(result: CommitResult, dry_run: bool) -> pb.ApplyResponse:
    ch, truncated = changes(result.diff)
    resp = pb.ApplyResponse(
        revision=result.revision,
        previous_revision=result.previous_revision,
        committed=result.committed,
        dry_run=dry_run,
        counts=counts(result.diff),
        changes=ch,
        changes_truncated=truncated,
    )
    if result.committed and result.manifest is not None:
        resp.info.CopyFrom(revision_info(result.manifest))
    return resp


def render(doc: ConfigDocument, fmt: int) -> tuple[bytes, int]:
    data = mask_value(doc.model_dump(mode="json", exclude_defaults=True))
    data = {"version": doc.version, **data}
    if fmt == pb.DOCUMENT_FORMAT_JSON:
        return json.dumps(data, indent=2).encode(), pb.DOCUMENT_FORMAT_JSON
    return yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False).encode(), pb.DOCUMENT_FORMAT_YAML


def parse_backend(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int | None]:
    """``198.51.100.5:8080``, ``[2001:db8::5]:8080``, or an address alone (every port)."""
    t = text.strip()
    try:
        return ipaddress.ip_address(t.strip("[]")), None
    except ValueError:
        pass
    host, sep, port = t.rpartition(":")
    if sep and port.isdigit():
        try:
            return ipaddress.ip_address(host.strip("[]")), int(port)
        except ValueError:
            pass
    raise ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{text!r} is not a backend: use ADDRESS:PORT or ADDRESS",
        issues=[Issue("backend", "expected ADDRESS:PORT, [IPv6]:PORT or ADDRESS")],
    )


def with_backend_state(
    doc: ConfigDocument, service: str, address: Any, port: int | None, state: str
) -> tuple[ConfigDocument, int]:
    """A copy of ``doc`` with the matching backends in ``state`` (sharing every untouched object),
    and how many backends matched."""
    matched = 0
    new_vips: list[Vip] = []
    for vip in doc.vips:
        new_services: list[Service] | None = None
        for i, svc in enumerate(vip.services):
            if service and svc.name != service:
                continue
            new_backends: list[Backend] | None = None
            for j, b in enumerate(svc.backends):
                if b.address == address and (port is None or b.port == port):
                    matched += 1
                    if b.state != state:
                        if new_backends is None:
                            new_backends = list(svc.backends)
                        new_backends[j] = b.model_copy(update={"state": state})
            if new_backends is not None:
                if new_services is None:
                    new_services = list(vip.services)
                new_services[i] = svc.model_copy(update={"backends": new_backends})
        new_vips.append(vip if new_services is None else vip.model_copy(update={"services": new_services}))
    return doc.model_copy(update={"vips": new_vips}), matched


def with_backend_state_in(
    doc: ConfigDocument, records: dict[str, Encoded], enc: Encoded, address: Any, port: int | None, state: str
) -> tuple[ConfigDocument, int]:
    """:func:`with_backend_state` for one service, located through the store's records (its VIP's
    position and its own) instead of a scan of every service."""
    vip_enc = records.get(f"vips/{enc.vip}")
    if vip_enc is None or vip_enc.index >= len(doc.vips):
        return with_backend_state(doc, enc.key.removeprefix("services/"), address, port, state)
    vip = doc.vips[vip_enc.index]
    if enc.index >= len(vip.services) or vip.services[enc.index] is not enc.obj:
        return with_backend_state(doc, enc.key.removeprefix("services/"), address, port, state)
    svc = vip.services[enc.index]
    matched = 0
    backends: list[Backend] | None = None
    for j, b in enumerate(svc.backends):
        if b.address == address and (port is None or b.port == port):
            matched += 1
            if b.state != state:
                if backends is None:
                    backends = list(svc.backends)
                backends[j] = b.model_copy(update={"state": state})
    if backends is None:
        return doc, matched
    services = list(vip.services)
    services[enc.index] = svc.model_copy(update={"backends": backends})
    vips = list(doc.vips)
    vips[vip_enc.index] = vip.model_copy(update={"services": services})
    return doc.model_copy(update={"vips": vips}), matched


# --- node states and drains --------------------------------------------------------------------------


def drain_options(req: pb.SetNodeStateRequest, state: str) -> tuple[float | None, int | None]:
    """The drain's timeout (seconds) and threshold from the request, each None when not given;
    refused when out of range, or given with another state than DRAINING."""
    has = req.HasField("drain")
    if state != "draining":
        if has:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "drain options go with state DRAINING only",
                issues=[Issue("drain", "only with state DRAINING")],
            )
        return None, None
    timeout = req.drain.timeout_s if has and req.drain.HasField("timeout_s") else None
    threshold = req.drain.threshold if has and req.drain.HasField("threshold") else None
    if timeout is not None and not (math.isfinite(timeout) and DRAIN_TIMEOUT_MIN_S <= timeout <= DRAIN_TIMEOUT_MAX_S):
        why = f"a drain timeout of {timeout:g}s is out of range: 1s to 24h (86400s)"
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, why, issues=[Issue("drain.timeout_s", why)])
    if threshold is not None and threshold > Limits.EXPECTED_CONNECTIONS_MAX:
        why = f"a drain threshold of {threshold} connections is more than a node can hold"
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, why, issues=[Issue("drain.threshold", why)])
    return timeout, threshold


def with_node_state(
    doc: ConfigDocument,
    node: str | None,
    cluster: str | None,
    state: str,
    timeout: float | None,
    threshold: int | None,
    now: datetime,
) -> ConfigDocument:
    """``doc`` with a node (or every node of a cluster) in ``state``. Draining an already draining node
    keeps its start (a new timeout or threshold applies from that start); with a cluster, DRAINING
    drains its active nodes and ACTIVE restores its draining ones, isolated nodes are left alone.
    Draining a single isolated node is refused: its VIPs are withdrawn already."""
    if cluster is not None and all(c.name != cluster for c in doc.clusters):
        raise ApiError(grpc.StatusCode.NOT_FOUND, f"unknown cluster {cluster!r}")
    nodes = list(doc.nodes)
    found = False
    for i, n in enumerate(nodes):
        if (node is not None and n.id != node) or (cluster is not None and n.cluster != cluster):
            continue
        found = True
        if state == "draining":
            if n.state == "isolated":
                if cluster is not None:
                    continue
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"node {n.id} is isolated: its VIPs are withdrawn already, there is nothing to drain; "
                    f"nothing changed (restore it first with `vgwctl node restore {n.id}` to drain it)",
                    issues=[Issue(f"nodes/{n.id}/state", "isolated: restore it before draining it")],
                )
            old = n.drain if n.state == "draining" else None
            drain = NodeDrain(
                started_at=old.started_at if old is not None else now,
                timeout=timeout if timeout is not None else (old.timeout if old else DRAIN_TIMEOUT_DEFAULT_S),
                threshold=threshold if threshold is not None else (old.threshold if old else DRAIN_THRESHOLD_DEFAULT),
            )
            if n.state != "draining" or n.drain != drain:
                nodes[i] = n.model_copy(update={"state": "draining", "drain": drain})
        else:
            if cluster is not None and n.state != "draining":
                continue
            if n.state != state:
                nodes[i] = n.model_copy(update={"state": state, "drain": None})
    if not found:
        if node is not None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"unknown node {node!r}")
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"cluster {cluster!r} has no nodes")
    return doc.model_copy(update={"nodes": nodes})


def _serving_nodes(doc: ConfigDocument) -> dict[Any, list[str]]:
    """VIP address -> the nodes that announce it (primary nodes, and the standby cluster's nodes)."""
    by_cluster: dict[str, list[str]] = {}
    for n in doc.nodes:
        by_cluster.setdefault(n.cluster, []).append(n.id)
    standby_of = {c.name: c.standby for c in doc.clusters}
    out: dict[Any, list[str]] = {}
    for v in doc.vips:
        nodes = list(v.nodes) if v.nodes is not None else list(by_cluster.get(v.cluster, []))
        standby = v.standby_cluster or standby_of.get(v.cluster)
        if standby is not None:
            nodes += by_cluster.get(standby, [])
        out[v.address] = nodes
    return out


def vips_left_without_active_node(old: ConfigDocument, new: ConfigDocument) -> list[Any]:
    """VIPs that have an active node in ``old`` but none in ``new`` (the blast-radius guard of a drain:
    once the drain ends, nobody would announce them)."""
    before = {n.id: n.state for n in old.nodes}
    after = {n.id: n.state for n in new.nodes}
    if before == after:
        return []
    out = []
    for vip, nodes in _serving_nodes(new).items():
        if any(before.get(n) == "active" for n in nodes) and not any(after.get(n) == "active" for n in nodes):
            out.append(vip)
    return out


# --- the service -----------------------------------------------------------------------------------


class ConfigApi:
    def __init__(
        self,
        store: ConfigStore,
        *,
        auth: Authenticator | None = None,
        max_watches: int = 64,
        max_watches_per_identity: int = 8,
    ) -> None:
        self.store = store
        self.auth = auth or Authenticator()
        self.max_watches = max_watches
        self.max_watches_per_identity = max_watches_per_identity
        self._watches: dict[str, int] = {}

    # -- plumbing --

    def _authorize(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        """The caller's identity, if it may call ``method`` with ``request``; else UNAUTHENTICATED or
        PERMISSION_DENIED (counted and logged). The identity is the actor of what the call commits."""
        try:
            identity = self.auth.authenticate(context.invocation_metadata(), context.auth_context())
            self.auth.authorize(identity, method, request)
        except AuthFailure as exc:
            self.auth.record(exc, method, context.peer())
            raise ApiError(exc.code, exc.message) from None
        _IDENTITY.set(identity)
        return identity

    @staticmethod
    def _actor(context: grpc.aio.ServicerContext[Any, Any]) -> str:
        identity = _IDENTITY.get(None)
        return identity.actor if identity is not None else f"local:{context.peer()}"

    async def _fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: ApiError) -> None:
        if exc.current_revision is not None:
            context.set_trailing_metadata(((CURRENT_REVISION_HEADER, str(exc.current_revision)),))
        await context.abort_with_status(exc.status())

    def _unary(
        self,
        name: str,
        fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]],
        req: type[Message],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            start = time.perf_counter()

            # Counted before the status goes out: abort sends it to the client at once, and a
            # client that reads the metrics next must find its call counted.
            def count(code: str) -> None:
                metrics.REQUESTS.labels(name, code).inc()
                metrics.REQUEST_SECONDS.labels(name).observe(time.perf_counter() - start)

            try:
                self._authorize(name, request, context)
                reply = await fn(request, context)
            except ApiError as exc:
                count(exc.code.name)
                await self._fail(context, exc)
                raise  # unreachable: abort raises
            except (ConnectionError, TimeoutError) as exc:
                count("UNAVAILABLE")
                await self._fail(context, ApiError(grpc.StatusCode.UNAVAILABLE, f"config store unavailable: {exc}"))
                raise
            except grpc.aio.AbortError:
                count("OK")  # as before: a handler's own abort is not an API error of ours
                raise
            except Exception:
                count("INTERNAL")
                log.exception("%s failed", name)
                raise
            count("OK")
            return reply

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=req.FromString, response_serializer=lambda m: m.SerializeToString()
        )

    def handler(self) -> grpc.GenericRpcHandler:
        watch: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(
            self._watch_handler,
            request_deserializer=pb.WatchRequest.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Apply": self._unary("Apply", self.apply, pb.ApplyRequest),
                "Get": self._unary("Get", self.get, pb.GetRequest),
                "List": self._unary("List", self.list, pb.ListRequest),
                "Diff": self._unary("Diff", self.diff, pb.DiffRequest),
                "History": self._unary("History", self.history, pb.HistoryRequest),
                "Rollback": self._unary("Rollback", self.rollback, pb.RollbackRequest),
                "SetBackendState": self._unary("SetBackendState", self.set_backend_state, pb.SetBackendStateRequest),
                "SetNodeState": self._unary("SetNodeState", self.set_node_state, pb.SetNodeStateRequest),
                "Watch": watch,
            },
        )

    # -- operations --

    async def _load(self, data: bytes) -> ConfigDocument:
        if len(data) > Limits.DOCUMENT_BYTES:
            raise invalid(
                ConfigInvalid(
                    [Issue("document", f"document is {len(data)} bytes; the limit is {Limits.DOCUMENT_BYTES} bytes")]
                )
            )
        try:
            doc = await asyncio.to_thread(load_document, data)
            if has_mask(doc):
                _, stored, _, _, _ = await self.store.current_state()
                doc = unmask(doc, stored)
            return doc
        except ConfigInvalid as exc:
            metrics.REJECTED.labels("invalid").inc()
            raise invalid(exc) from None

    async def _commit(
        self,
        doc: ConfigDocument,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        reason: str,
        action: Action,
        expected: int | None,
        dry_run: bool = False,
    ) -> CommitResult:
        with tracer.start_as_current_span("config.commit") as span:
            span.set_attribute("vgw.config.action", action)
            span.set_attribute("vgw.config.dry_run", dry_run)
            try:
                result = await self.store.commit(
                    doc,
                    actor=self._actor(context),
                    reason=reason,
                    action=action,
                    expected_revision=expected,
                    dry_run=dry_run,
                )
            except ConfigConflict as exc:
                metrics.REJECTED.labels("conflict").inc()
                raise conflict(exc) from None
            span.set_attribute("vgw.config.revision", result.revision)
            span.set_attribute("vgw.config.committed", result.committed)
        if result.committed:
            metrics.COMMITS.labels(action).inc()
            metrics.REVISION.set(result.revision)
            log.info(
                "revision %d committed (%s by %s)",
                result.revision,
                action,
                self._actor(context),
                extra={"revision": result.revision, "action": action, "counts": result.diff.counts()},
            )
        return result

    async def apply(self, req: pb.ApplyRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ApplyResponse:
        doc = await self._load(req.document)
        warnings = await asyncio.to_thread(document_warnings, doc)
        expected = req.expected_revision if req.HasField("expected_revision") else None
        result = await self._commit(
            doc, context, reason=req.reason, action="apply", expected=expected, dry_run=req.dry_run
        )
        if warnings:
            for w in warnings:
                log.warning("apply%s: %s", " (dry run)" if req.dry_run else "", w)
            context.set_trailing_metadata(warning_metadata(warnings))
        return apply_response(result, req.dry_run)

    async def _revision(self, revision: int) -> tuple[int, ConfigDocument, Manifest | None]:
        try:
            if revision == 0:
                rev, doc, _, manifest, _ = await self.store.current_state()
                return rev, doc, manifest
            r = await self.store.revision(revision)
            return r.revision, r.document, r.manifest
        except RevisionNotFound as exc:
            raise ApiError(grpc.StatusCode.NOT_FOUND, str(exc)) from None

    async def get(self, req: pb.GetRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetResponse:
        rev, doc, manifest = await self._revision(req.revision)
        data, fmt = await asyncio.to_thread(render, doc, req.format)
        resp = pb.GetResponse(revision=rev, document=data, format=fmt)  # type: ignore[arg-type]
        if manifest is not None:
            resp.info.CopyFrom(revision_info(manifest))
        return resp

    async def list(self, req: pb.ListRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ListResponse:
        rev, doc, _ = await self._revision(req.revision)
        kind = req.kind
        vips = list(doc.vips)
        if req.node:
            view = node_view(doc, req.node)
            if view is None:
                raise ApiError(grpc.StatusCode.NOT_FOUND, f"unknown node {req.node!r}")
            vips = [v for v, _ in view.vips]
        if req.vip:
            try:
                want = ipaddress.ip_address(req.vip)
            except ValueError:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{req.vip!r} is not an IP address") from None
            vips = [v for v in vips if v.address == want]
        objects: list[pb.Object] = []
        if kind == "vips":
            for v in vips:
                data = v.model_dump(mode="json", exclude={"services"})
                data["services"] = [s.name for s in v.services]
                objects.append(pb.Object(kind=kind, key=str(v.address), json=json.dumps(data)))
        elif kind == "services":
            for v in vips:
                for s in v.services:
                    if req.service and s.name != req.service:
                        continue
                    data = {"vip": str(v.address), **s.model_dump(mode="json")}
                    objects.append(pb.Object(kind=kind, key=s.name, json=json.dumps(data)))
        elif kind == "backends":
            for v in vips:
                for s in v.services:
                    if req.service and s.name != req.service:
                        continue
                    for b in s.backends:
                        data = {"service": s.name, "vip": str(v.address), **b.model_dump(mode="json")}
                        objects.append(pb.Object(kind=kind, key=f"{s.name}/{b.key}", json=json.dumps(data)))
        elif kind == "nodes":
            for n in doc.nodes:
                if req.node and n.id != req.node:
                    continue
                data = mask_value(n.model_dump(mode="json"))
                objects.append(pb.Object(kind=kind, key=n.id, json=json.dumps(data)))
        elif kind == "clusters":
            objects = [pb.Object(kind=kind, key=c.name, json=c.model_dump_json()) for c in doc.clusters]
        elif kind == "health_checks":
            objects = [pb.Object(kind=kind, key=c.name, json=c.model_dump_json()) for c in doc.health_checks]
        else:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown kind {kind!r}: use vips, services, backends, nodes, clusters or health_checks",
                issues=[Issue("kind", "use vips, services, backends, nodes, clusters or health_checks")],
            )
        return pb.ListResponse(revision=rev, objects=objects)

    async def diff(self, req: pb.DiffRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.DiffResponse:
        if req.document:
            doc = await self._load(req.document)
            result = await self.store.commit(doc, actor=self._actor(context), dry_run=True)
            ch, truncated = changes(result.diff)
            return pb.DiffResponse(
                from_revision=result.revision, to_revision=0, counts=counts(result.diff), changes=ch,
                changes_truncated=truncated,
            )  # fmt: skip
        old_rev, old_doc, _ = await self._revision(req.from_revision) if req.from_revision else (0, None, None)
        new_rev, new_doc, _ = await self._revision(req.to_revision)
        d = await asyncio.to_thread(diff_documents, old_doc, new_doc)
        ch, truncated = changes(d)
        return pb.DiffResponse(
            from_revision=old_rev, to_revision=new_rev, counts=counts(d), changes=ch, changes_truncated=truncated
        )

    async def history(self, req: pb.HistoryRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.HistoryResponse:
        limit = req.limit or 20
        manifests = await self.store.history(limit=min(limit, 1000), before=req.before or None)
        return pb.HistoryResponse(revisions=[revision_info(m) for m in manifests])

    async def rollback(self, req: pb.RollbackRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ApplyResponse:
        expected = req.expected_revision if req.HasField("expected_revision") else None
        try:
            old = await self.store.revision(req.revision)
        except RevisionNotFound as exc:
            raise ApiError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        issues = semantic_issues(old.document)
        if issues:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"revision {req.revision} is not valid under the current rules",
                issues=issues,
            )
        result = await self._rollback_commit(old.document, context, req, expected)
        return apply_response(result, False)

    async def _rollback_commit(
        self,
        doc: ConfigDocument,
        context: grpc.aio.ServicerContext[Any, Any],
        req: pb.RollbackRequest,
        expected: int | None,
    ) -> CommitResult:
        try:
            result = await self.store.commit(
                doc,
                actor=self._actor(context),
                reason=req.reason or f"rollback to revision {req.revision}",
                action="rollback",
                expected_revision=expected,
                rolled_back_to=req.revision,
            )
        except ConfigConflict as exc:
            metrics.REJECTED.labels("conflict").inc()
            raise conflict(exc) from None
        if result.committed:
            metrics.COMMITS.labels("rollback").inc()
            metrics.REVISION.set(result.revision)
        return result

    async def _edit(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        expected: int | None,
        reason: str,
        action: Action,
        edit: Callable[[ConfigDocument, dict[str, Encoded]], ConfigDocument],
    ) -> CommitResult:
        """Apply ``edit`` to the current document and commit; retried when another writer got in
        between (unless the caller named the revision it expects)."""
        for attempt in range(5):
            rev, doc, records, _, _ = await self.store.current_state()
            if expected is not None and expected != rev:
                raise conflict(ConfigConflict(expected, rev))
            new = edit(doc, records)
            try:
                return await self._commit(new, context, reason=reason, action=action, expected=rev)
            except ApiError as exc:
                if expected is not None or exc.code != grpc.StatusCode.FAILED_PRECONDITION or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def set_backend_state(
        self, req: pb.SetBackendStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ApplyResponse:
        state = _BACKEND_STATES.get(req.state)
        if state is None:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "state must be ENABLED, DRAINING or DISABLED",
                issues=[Issue("state", "must be ENABLED, DRAINING or DISABLED")],
            )
        address, port = parse_backend(req.backend)

        def edit(doc: ConfigDocument, records: dict[str, Encoded]) -> ConfigDocument:
            if req.service:
                enc = records.get(f"services/{req.service}")
                if enc is None:
                    raise ApiError(grpc.StatusCode.NOT_FOUND, f"unknown service {req.service!r}")
                new, matched = with_backend_state_in(doc, records, enc, address, port, state)
            else:
                new, matched = with_backend_state(doc, "", address, port, state)
            if not matched:
                where = f" in service {req.service!r}" if req.service else ""
                raise ApiError(grpc.StatusCode.NOT_FOUND, f"no backend {req.backend}{where}")
            return new

        expected = req.expected_revision if req.HasField("expected_revision") else None
        reason = req.reason or f"backend {req.backend} {state}"
        return apply_response(await self._edit(context, expected, reason, "backend_state", edit), False)

    async def set_node_state(
        self, req: pb.SetNodeStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ApplyResponse:
        state = _NODE_STATES.get(req.state)
        if state is None:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "state must be ACTIVE, ISOLATED or DRAINING",
                issues=[Issue("state", "must be ACTIVE, ISOLATED or DRAINING")],
            )
        if bool(req.node) == bool(req.cluster):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "give a node or a cluster (not both)",
                issues=[Issue("node", "give a node or a cluster (not both)")],
            )
        if req.cluster and state == "isolated":
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a cluster can be drained or restored, not isolated (a cluster withdraw request fails it over)",
                issues=[Issue("state", "with cluster: DRAINING or ACTIVE")],
            )
        timeout, threshold = drain_options(req, state)
        now = datetime.now(UTC)
        target = f"node {req.node}" if req.node else f"cluster {req.cluster}"

        def edit(doc: ConfigDocument, records: dict[str, Encoded]) -> ConfigDocument:
            new = with_node_state(doc, req.node or None, req.cluster or None, state, timeout, threshold, now)
            if state == "draining" and not req.force:
                stranded = vips_left_without_active_node(doc, new)
                if stranded:
                    shown = ", ".join(str(v) for v in stranded[:5]) + (" ..." if len(stranded) > 5 else "")
                    raise ApiError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"draining {target} would leave {len(stranded)} VIP(s) with no active node to announce "
                        f"them ({shown}): every node that serves them would be draining or isolated, so they "
                        "would be withdrawn everywhere once the drain ends; nothing changed. Give force "
                        "(vgwctl --force) to drain anyway",
                        issues=[
                            Issue(f"vips/{v}", "no active node would announce it (every node draining or isolated)")
                            for v in stranded[:100]
                        ],
                    )
            return new

        expected = req.expected_revision if req.HasField("expected_revision") else None
        reason = req.reason or f"{target} {state}"
        return apply_response(await self._edit(context, expected, reason, "node_state", edit), False)

    # -- watch --

    async def _watch_handler(
        self, req: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchResponse]:
        try:
            identity = self._authorize("Watch", req, context)
            key = self._open_watch(identity)
        except ApiError as exc:
            metrics.REQUESTS.labels("Watch", exc.code.name).inc()
            await self._fail(context, exc)
            return
        metrics.REQUESTS.labels("Watch", "OK").inc()
        metrics.WATCH_STREAMS.inc()
        try:
            if req.include_document:
                reader = ConfigReader(self.store.bus, self.store.bucket, recheck=False)  # its own writes
                await reader.open()
                async for r in reader.watch():
                    data, fmt = await asyncio.to_thread(render, r.document, req.format)
                    msg = pb.WatchResponse(revision=r.revision, document=data, format=fmt)  # type: ignore[arg-type]
                    if r.manifest is not None:
                        msg.info.CopyFrom(revision_info(r.manifest))
                    yield msg
            else:
                last = -1
                async for ev in self.store.heads.watch("head"):
                    entry = ev.entries.get("head") if isinstance(ev, Snapshot) else None
                    if isinstance(ev, Change):
                        if ev.entry is None:
                            continue
                        entry = ev.entry
                    manifest = entry.value if entry is not None else None
                    rev = manifest.revision if manifest is not None else 0
                    if rev == last:
                        continue
                    last = rev
                    msg = pb.WatchResponse(revision=rev)
                    if manifest is not None:
                        msg.info.CopyFrom(revision_info(manifest))
                    yield msg
        finally:
            metrics.WATCH_STREAMS.dec()
            self._close_watch(key)

    def _open_watch(self, identity: Identity) -> str:
        """Count a new Watch stream against the caps (VGW_CONFIG_MAX_WATCHES in all,
        VGW_CONFIG_MAX_WATCHES_PER_IDENTITY per identity), or refuse it with RESOURCE_EXHAUSTED."""
        key = identity.watch_key
        total = sum(self._watches.values())
        if total >= self.max_watches:
            metrics.WATCH_REFUSED.labels("total").inc()
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many Watch streams: {total} open, the limit is {self.max_watches} "
                "(VGW_CONFIG_MAX_WATCHES); close one or retry later",
            )
        mine = self._watches.get(key, 0)
        if mine >= self.max_watches_per_identity:
            metrics.WATCH_REFUSED.labels("identity").inc()
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many Watch streams for {identity.actor}: {mine} open, the limit per identity is "
                f"{self.max_watches_per_identity} (VGW_CONFIG_MAX_WATCHES_PER_IDENTITY)",
            )
        self._watches[key] = mine + 1
        return key

    def _close_watch(self, key: str) -> None:
        n = self._watches.get(key, 0) - 1
        if n > 0:
            self._watches[key] = n
        else:
            self._watches.pop(key, None)
