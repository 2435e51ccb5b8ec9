"""How an event's schema evolves: the version readers work with, and the upcasts to it.

The one place that knows older versions. A reader validates a body of another version only
after `upcast` has turned it into the current version's shape; a version newer than the
current one cannot be read here and is refused with `UnsupportedVersion`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

# The version producers write and handlers see (the envelope's schema_version).
CURRENT_VERSION: Final = 2

Envelope = dict[str, Any]


def _v1_to_v2(envelope: Envelope) -> Envelope:
    """Version 2 renamed order.shipped's `tracking` to `tracking_number`."""
    out = {**envelope, "schema_version": 2}
    payload = envelope.get("payload")
    if envelope.get("event_type") == "order.shipped" and isinstance(payload, dict):
        out["payload"] = {
            ("tracking_number" if k == "tracking" else k): v for k, v in payload.items()
        }
    return out


# Each older version's step to the next: upcast chains them up to CURRENT_VERSION.
UPCASTS: dict[int, Callable[[Envelope], Envelope]] = {1: _v1_to_v2}


class UnsupportedVersion(ValueError):
    """An envelope of a schema_version this reader does not know: newer than it reads."""

    def __init__(self, version: int, order_id: str, seq: int) -> None:
        self.version = version
        self.order_id = order_id
        self.seq = seq
        super().__init__(
            f"schema_version {version} is newer than this reader knows "
            f"(it reads {', '.join(map(str, readable()))})"
        )


def readable() -> list[int]:
    """The schema versions a reader accepts: the current one and those it upcasts."""
    return sorted({CURRENT_VERSION, *UPCASTS})


def version_of(envelope: object) -> int | None:
    """The envelope's schema_version when it is an integer (None otherwise)."""
    if not isinstance(envelope, dict):
        return None
    version = envelope.get("schema_version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def upcast(envelope: Envelope) -> Envelope:
    """The envelope in the current version's shape; each known older version steps up."""
    version = version_of(envelope)
    while version is not None and version != CURRENT_VERSION and version in UPCASTS:
        envelope = UPCASTS[version](envelope)
        version = version_of(envelope)
    return envelope
