"""How a handler says a failure should be treated."""

from __future__ import annotations


class NonRetryableError(Exception):
    """A permanent business error: the event goes to the DLQ at once and its order is parked."""


class TransientError(Exception):
    """A failure expected to heal: retried through the retry tiers (any exception is, too)."""


class HandlerTimeout(TransientError):
    """A handler call ran past its downstream's handler_timeout: retried like any transient."""
