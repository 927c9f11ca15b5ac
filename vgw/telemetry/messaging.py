"""Producer and consumer spans around NATS messages (no maintained nats-py instrumentation exists).

The producer's context travels in W3C ``traceparent``/``tracestate`` headers. The consumer span is
a child of the producer's context, so one change is one trace across services, and it also carries
a link to it, as the messaging conventions ask. Span names use the subject template
(``vgw.v1.backend.down``), never a subject with ids in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind

_TRACER = "vgw.bus"


class _CaseInsensitiveGetter(Getter[Mapping[str, str]]):
    """NATS header names are case-sensitive; trace headers must be read whatever their case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        key = key.lower()
        for k, v in carrier.items():
            if k.lower() == key:
                return [v]
        return None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _CaseInsensitiveGetter()


def _attributes(operation: str, template: str, subject: str, event_type: str, event_id: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": subject,
        "messaging.destination.template": template,
        "messaging.message.id": event_id,
        "cloudevents.event_type": event_type,
        "cloudevents.event_id": event_id,
    }


@contextmanager
def producer_span(
    template: str, subject: str, event_type: str, event_id: str, headers: MutableMapping[str, str]
) -> Iterator[Span]:
    """Open a PRODUCER span and inject its context into ``headers``."""
    tracer = trace.get_tracer(_TRACER)
    attrs = _attributes("send", template, subject, event_type, event_id)
    with tracer.start_as_current_span(f"send {template}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
        propagate.inject(headers)
        yield span


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(headers, getter=_GETTER)


@contextmanager
def consumer_span(
    template: str, subject: str, event_type: str, event_id: str, headers: Mapping[str, str]
) -> Iterator[Span]:
    """Open a CONSUMER ``process`` span, child of and linked to the producer's context."""
    tracer = trace.get_tracer(_TRACER)
    parent = extract(headers)
    producer = trace.get_current_span(parent).get_span_context()
    links = [Link(producer)] if producer.is_valid else []
    attrs = _attributes("process", template, subject, event_type, event_id)
    with tracer.start_as_current_span(
        f"process {template}", context=parent, kind=SpanKind.CONSUMER, attributes=attrs, links=links
    ) as span:
        yield span
