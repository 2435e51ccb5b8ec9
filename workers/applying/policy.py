"""What to do with a delivery that cannot be applied now: pure decisions and headers."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from events import headers as h
from events.headers import DeadReason
from topology.spec import RetrySpec
from workers.api import NonRetryableError

STACK_LIMIT = 4000
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class Retry:
    """Republish to a retry tier."""

    tier: str
    headers: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    """Hold in the store's waiting table until the predecessor is applied, at most until
    expires_at_ms (then the event is dead-lettered as predecessor-missing)."""

    expires_at_ms: int


@dataclass(frozen=True)
class DeadLetter:
    """Republish to the DLQ; park the order unless it is malformed or already blocked."""

    reason: DeadReason
    headers: dict[str, Any]

    @property
    def parks(self) -> bool:
        """Whether this dead-lettering parks the order behind it."""
        return self.reason.parks


def attempts_of(headers: Mapping[str, Any]) -> int:
    """The failed attempts a message has had (x-attempts, 0 when absent or bad)."""
    return h.count_of(headers, h.ATTEMPTS)


def deferrals_of(headers: Mapping[str, Any]) -> int:
    """How often a message has been deferred waiting for a predecessor."""
    return h.count_of(headers, h.DEFERRALS)


def _carried(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if k not in h.BROKER_DEATH_HEADERS}


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (due times shared between processes)."""
    return time.time_ns() // 1_000_000


def wait_bound_ms(retry: RetrySpec) -> int:
    """How long an event waits for its predecessor: max_deferrals x the first tier's delay."""
    return retry.max_deferrals * next(iter(retry.tiers.values()))


def on_failure(
    headers: Mapping[str, Any], exc: BaseException, retry: RetrySpec, queue: str
) -> Retry | DeadLetter:
    """A handler failed: retry through the tier for this attempt, or dead-letter."""
    attempts = attempts_of(headers) + 1
    if isinstance(exc, NonRetryableError):
        return DeadLetter(
            DeadReason.NON_RETRYABLE,
            dead_headers(headers, DeadReason.NON_RETRYABLE, exc, queue, attempts),
        )
    if attempts >= retry.max_attempts:
        return DeadLetter(
            DeadReason.RETRIES_EXHAUSTED,
            dead_headers(headers, DeadReason.RETRIES_EXHAUSTED, exc, queue, attempts),
        )
    tiers = list(retry.tiers)
    tier = tiers[min(attempts - 1, len(tiers) - 1)]
    due = now_ms() + retry.tiers[tier]
    return Retry(tier, {**_carried(headers), h.ATTEMPTS: attempts, h.RETRY_AT: due})


def gap_detail(
    downstream: str, order_id: str, seq: int, last_seq: int, parked_event_id: str | None
) -> str:
    """Why an event waits or is dead-lettered for a missing predecessor, and what to do."""
    last = f"seq {last_seq}" if last_seq else "none yet"
    redrive = (
        f"`python -m topology dlq redrive {downstream} --order-id {order_id}` then applies "
        "the order's dead-lettered events in seq order"
    )
    if parked_event_id:
        return (
            f"order {order_id}: seq {seq} arrived while the order is parked behind dead-lettered "
            f"event {parked_event_id} (last applied: {last}); fix that event's cause, and "
            + redrive
        )
    return (
        f"order {order_id}: seq {seq} arrived before seq {last_seq + 1} (last applied: {last}); "
        f"it waits for seq {last_seq + 1}, and if that never comes it is dead-lettered as "
        f"predecessor-missing and the order is parked; once seq {last_seq + 1} is found, " + redrive
    )


def on_gap(
    headers: Mapping[str, Any],
    parked: bool,
    retry: RetrySpec,
    queue: str,
    detail: str,
    expires_at_ms: int | None = None,
) -> Wait | DeadLetter:
    """A predecessor is missing: wait in the store (until expires_at_ms when it already
    waits there), or dead-letter behind a parked order or once the bound has passed."""
    if parked:
        reason = DeadReason.BLOCKED_BY_PREDECESSOR
        return DeadLetter(reason, dead_headers(headers, reason, None, queue, None, detail))
    now = now_ms()
    if expires_at_ms is None:
        # A copy deferred through the first tier by an older worker has used up some waits.
        used = deferrals_of(headers) * next(iter(retry.tiers.values()))
        expires_at_ms = now + wait_bound_ms(retry) - used
    if expires_at_ms <= now:
        reason = DeadReason.PREDECESSOR_MISSING
        return DeadLetter(reason, dead_headers(headers, reason, None, queue, None, detail))
    return Wait(expires_at_ms)


def dead_headers(
    headers: Mapping[str, Any],
    reason: DeadReason,
    exc: BaseException | None,
    queue: str,
    attempts: int | None,
    detail: str | None = None,
) -> dict[str, Any]:
    """The original headers plus the failure context of the wire contract."""
    out = _carried(headers)
    out[h.DEAD_REASON] = reason.value
    out[h.FAILED_AT] = datetime.now(UTC).isoformat()
    out[h.FAILED_QUEUE] = queue
    if attempts is not None:
        out[h.ATTEMPTS] = attempts
    if exc is not None:
        out[h.ERROR_TYPE] = type(exc).__qualname__
        out[h.ERROR_MESSAGE] = str(exc)[:MESSAGE_LIMIT]
        stack = "".join(traceback.format_exception(exc))
        out[h.ERROR_STACK] = stack[-STACK_LIMIT:]
    elif detail:
        out[h.ERROR_TYPE] = reason.value
        out[h.ERROR_MESSAGE] = detail[:MESSAGE_LIMIT]
    return out
