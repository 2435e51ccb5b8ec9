"""The wire contract's header vocabulary: every header name, and why an event is dead.

One home: the codec, the workers, the DLQ tools, replay and status all read these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

# The envelope's routing headers (set by the producer; the hash exchange reads order_id).
ORDER_ID = "order_id"
SEQ = "seq"

# Retry bookkeeping, kept by the workers.
ATTEMPTS = "x-attempts"  # handler failures so far
DEFERRALS = "x-deferrals"  # waits for a missing predecessor so far (before the waiting table)
RETRY_AT = "x-retry-at"  # when a copy in a retry tier is due back, ms since the epoch

# The failure context of a dead letter.
DEAD_REASON = "x-dead-reason"
ERROR_TYPE = "x-error-type"
ERROR_MESSAGE = "x-error-message"
ERROR_STACK = "x-error-stack"
FAILED_AT = "x-failed-at"
FAILED_QUEUE = "x-failed-queue"

# Operator tools' marks.
REDRIVEN_COUNT = "x-redriven-count"
REDRIVEN_AT = "x-redriven-at"
REPLAYED = "x-replayed"
REAPPLY = "x-reapply"  # the worker re-reads the order's progress from its store

# Headers RabbitMQ adds when it dead-letters a message. Consumers that republish drop them
# (the workers count attempts in x-attempts themselves); x-delivery-count is the quorum
# queues' redelivery counter.
DEATH = "x-death"
BROKER_DEATH_HEADERS = frozenset(
    {
        DEATH,
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
# What describes a failure or a retry: a redriven message starts afresh without them.
FAILURE_HEADERS = BROKER_DEATH_HEADERS | {
    ATTEMPTS,
    DEFERRALS,
    RETRY_AT,
    DEAD_REASON,
    ERROR_TYPE,
    ERROR_MESSAGE,
    ERROR_STACK,
    FAILED_AT,
    FAILED_QUEUE,
}


class DeadReason(StrEnum):
    """Why an event is in the DLQ (header x-dead-reason)."""

    MALFORMED = "malformed"
    NON_RETRYABLE = "non-retryable"
    RETRIES_EXHAUSTED = "retries-exhausted"
    BLOCKED_BY_PREDECESSOR = "blocked-by-predecessor"
    PREDECESSOR_MISSING = "predecessor-missing"
    UNSUPPORTED_VERSION = "unsupported-version"  # a newer schema_version than workers read
    DELIVERY_LIMIT = "delivery-limit"  # dead-lettered by the broker (x-death), not a worker

    @property
    def parks(self) -> bool:
        """Whether a dead letter for this reason parks its order behind it in the worker."""
        return self in PARKING_REASONS


PARKING_REASONS = frozenset(
    {
        DeadReason.NON_RETRYABLE,
        DeadReason.RETRIES_EXHAUSTED,
        DeadReason.PREDECESSOR_MISSING,
        DeadReason.UNSUPPORTED_VERSION,
    }
)


def retry_at_of(headers: Mapping[str, Any]) -> int:
    """x-retry-at in ms since the epoch (0 when absent or bad: due at once)."""
    return count_of(headers, RETRY_AT)


def count_of(headers: Mapping[str, Any], name: str) -> int:
    """A non-negative counter header (x-attempts, x-deferrals); 0 when absent or bad."""
    value = headers.get(name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def dead_reason_of(headers: Mapping[str, Any]) -> str:
    """x-dead-reason, or the broker's own reason (delivery-limit) from x-death."""
    if reason := headers.get(DEAD_REASON):
        return str(reason)
    deaths = headers.get(DEATH) or []
    if deaths and isinstance(deaths[0], dict):
        return str(deaths[0].get("reason", "unknown")).replace("_", "-")
    return "unknown"


def order_id_of(headers: Mapping[str, Any]) -> str:
    """The order_id header as text ('' when missing)."""
    value = headers.get(ORDER_ID)
    return value.decode() if isinstance(value, bytes) else str(value or "")


def seq_of(headers: Mapping[str, Any]) -> int:
    """The seq header (0 when missing or not an integer)."""
    value = headers.get(SEQ)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
