"""Retrying JetStream calls through the short outages of a NATS cluster.

When a server dies, the streams it led elect a new leader among the others (seconds), and clients
connected to it reconnect elsewhere. Meanwhile a KV or stream call times out, finds no responders or
gets "JetStream temporarily unavailable". Those are *transient*: the same call made again after the
election succeeds. Callers decide whether a retry is idempotent; this module only tells transient
from final errors and retries with back-off until a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import (
    ConnectionReconnectingError,
    NoRespondersError,
    StaleConnectionError,
)
from nats.errors import (
    TimeoutError as NatsTimeoutError,
)
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from vgw import metrics

log = logging.getLogger("vgw.jsretry")

T = TypeVar("T")

DEFAULT_DEADLINE_S = 30.0
"""Longer than a JetStream election after a lost server (4-9 s election timeouts; 5-10 s seen in the
lab and the tests) plus the client's reconnect, with room to spare on a loaded machine; short enough
that a caller whose NATS is gone altogether gets its error and can fail static."""

# JetStream API errors that mean "not now", not "no": every 503 (no leader, JetStream temporarily
# unavailable, insufficient resources while a peer is away), and 500 "cluster can not handle request"
# from a server that just lost its leadership.
_TRANSIENT_CODES = {503}
_TRANSIENT_ERR_CODES = {10008, 10009, 10023}


def is_transient(exc: BaseException) -> bool:
    """True when the same call may well succeed once the cluster has re-elected or reconnected."""
    if isinstance(exc, (ServiceUnavailableError, NoStreamResponseError, NoRespondersError)):
        return True
    if isinstance(exc, (NatsTimeoutError, TimeoutError, ConnectionReconnectingError, StaleConnectionError)):
        return True
    if isinstance(exc, APIError):
        # KV errors (e.g. a wrong last sequence) are APIErrors that may lack the attributes
        code, err_code = getattr(exc, "code", None), getattr(exc, "err_code", None)
        return code in _TRANSIENT_CODES or err_code in _TRANSIENT_ERR_CODES
    return False


async def retrying(
    op: str, call: Callable[[], Awaitable[T]], *, deadline_s: float = DEFAULT_DEADLINE_S, what: str = ""
) -> T:
    """``await call()``, again after each transient error (back-off 0.05 s to 1 s) until
    ``deadline_s`` has passed; then, or on any other error, the error is raised."""
    start = time.monotonic()
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() - start + delay > deadline_s:
                raise
            metrics.STORE_RETRIES.labels(op).inc()
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s %s: %s; retrying (attempt %d)", op, what, exc or type(exc).__name__, attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
