"""How many JetStream replicas VGW's state keeps (``VGW_JS_REPLICAS``), and the start-up check of
the streams that already exist.

Every KV bucket (stream ``KV_<bucket>``) and the event stream ``VGW_EVENTS`` are created with the
wanted replica count. A stream that already exists is never changed: a mismatch is logged once per
process at ERROR, with the command that fixes it, and shown as ``vgw_js_replicas_mismatch{stream} 1``.
docs/settings.md ("JetStream replicas") explains why VGW reports rather than repairs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nats.js import JetStreamContext

from vgw import metrics

log = logging.getLogger("vgw.jsreplicas")

CLUSTER_DEFAULT = 3
"""Replicas when the server belongs to a cluster and VGW_JS_REPLICAS is unset: survives one lost server."""

_reported: set[tuple[str, int, int]] = set()


def wanted_replicas(explicit: int | None, server_info: Mapping[str, Any]) -> int:
    """``explicit`` (VGW_JS_REPLICAS) when set; otherwise 3 when the server we are connected to
    belongs to a NATS cluster (its INFO names one: a ``cluster {}`` block), else 1.

    Asking the server, not counting the URLs in VGW_NATS_URL: a single URL may well be a load
    balancer or a Kubernetes service in front of a cluster, and several URLs may name one server.
    """
    if explicit is not None:
        return explicit
    return CLUSTER_DEFAULT if server_info.get("cluster") else 1


def record(stream: str, found: int, wanted: int, what: str) -> bool:
    """Publish the stream's replicas in metrics; log a mismatch (once per process and value).
    Returns True when they match."""
    metrics.JS_REPLICAS.labels(stream).set(found)
    metrics.JS_REPLICAS_WANTED.set(wanted)
    matches = found == wanted
    metrics.JS_REPLICAS_MISMATCH.labels(stream).set(0 if matches else 1)
    if not matches and (stream, found, wanted) not in _reported:
        _reported.add((stream, found, wanted))
        log.error(
            "JetStream stream %s (%s) has %d replica(s) but VGW_JS_REPLICAS wants %d: %s. VGW does not change an "
            "existing stream; fix it once with `nats stream edit %s --replicas %d` (or set VGW_JS_REPLICAS=%d if "
            "this is intended); see docs/settings.md",
            stream,
            what,
            found,
            wanted,
            "losing one NATS server can lose this state" if found < wanted else "it needs more servers than wanted",
            stream,
            wanted,
            found,
            extra={"stream": stream, "replicas": found, "wanted": wanted},
        )
    return matches


async def check(js: JetStreamContext, stream: str, wanted: int, what: str) -> bool | None:
    """Read the stream's replica count and :func:`record` it; None when it cannot be read (logged:
    a check never stops a service that can otherwise work)."""
    try:
        info = await js.stream_info(stream)
    except Exception as exc:
        log.warning("cannot check the replicas of %s (%s): %s", stream, what, exc or type(exc).__name__)
        return None
    return record(stream, info.config.num_replicas or 1, wanted, what)
