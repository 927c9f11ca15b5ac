"""The event base class and the registry of event types.

Every event type is a frozen pydantic model. Its CloudEvents type (``io.vgw.<name>.v1``) and its
NATS subject (``vgw.v1.<name>.<tokens...>``) are derived from one ``name`` so they cannot drift.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from vgw.naming import addr_token

SUBJECT_ROOT = "vgw.v1"
TYPE_PREFIX = "io.vgw."
TYPE_VERSION = "v1"

IPAddress = IPv4Address | IPv6Address
Name = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", description="An identifier (node, service, check, cluster)")
]
Port = Annotated[int, Field(ge=0, le=65535)]
Text = Annotated[str, Field(max_length=1024)]

_REGISTRY: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base of every VGW event. Subclasses set ``name`` and, if any, ``subject_params``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""
    """Dotted event name, e.g. ``backend.down``; gives type and subject."""
    subject_params: ClassVar[tuple[str, ...]] = ()
    """Names of the subject tokens after the base subject, for documentation and filtering."""
    summary: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            event_type = cls.event_type()
            if event_type in _REGISTRY:
                raise TypeError(f"event type {event_type} registered twice")
            _REGISTRY[event_type] = cls

    @classmethod
    def event_type(cls) -> str:
        return f"{TYPE_PREFIX}{cls.name}.{TYPE_VERSION}"

    @classmethod
    def subject_base(cls) -> str:
        return f"{SUBJECT_ROOT}.{cls.name}"

    @classmethod
    def subject_filter(cls) -> str:
        """The NATS subject that matches every event of this type."""
        return f"{cls.subject_base()}.>" if cls.subject_params else cls.subject_base()

    def subject_tokens(self) -> tuple[str, ...]:
        """Values of ``subject_params`` for this event, already encoded as tokens."""
        return ()

    def subject(self) -> str:
        tokens = self.subject_tokens()
        if len(tokens) != len(self.subject_params):
            raise ValueError(f"{type(self).__name__}: {len(tokens)} subject tokens for {self.subject_params}")
        return ".".join((self.subject_base(), *tokens))

    def ce_subject(self) -> str | None:
        """The CloudEvents ``subject``: what the event is about, readable, without a lookup."""
        return None


def registry() -> dict[str, type[Event]]:
    """Event type string -> model class, for every event type defined."""
    return dict(_REGISTRY)


def vip_token(vip: IPAddress | None) -> str:
    return "all" if vip is None else addr_token(vip)
