"""The handler API: everything a downstream's own code imports (see docs/handlers.md).

A handler is a subclass of `Handler` named in the topology file (`handler: package.module:Class`)
or registered under the entry point group `order_event_bus.handlers` by downstream name:
- `define_tables(metadata)` adds its tables to the downstream's store;
- `check(event, attempts)` does the event's work outside the transaction (calls to other
  services) and raises `TransientError` (retried through the tiers; any other exception is
  too) or `NonRetryableError` (dead-lettered at once, its order parked);
- `before_batch(events)` is the same once per batch, for a batching downstream;
- `write(tx, events)` applies the effects of a batch of events (one event unless the file
  batches) inside the store transaction that also records them as applied, so the effect
  commits exactly when they do.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from sqlalchemy import MetaData

from events import AnyEvent
from topology.spec import DownstreamSpec
from workers.store.tables import store_tables
from workers.store.tx import Tx, insert_sql, upsert_sql

ENTRY_POINT_GROUP = "order_event_bus.handlers"


class NonRetryableError(Exception):
    """A permanent business error: the event goes to the DLQ at once and its order is parked."""


class TransientError(Exception):
    """A failure expected to heal: retried through the retry tiers (any exception is, too)."""


class HandlerTimeout(TransientError):
    """A handler call ran past its downstream's handler_timeout: retried like any transient."""


class HandlerNotFound(Exception):
    """A handler named in the file or an entry point that cannot be loaded."""


class Handler:
    """A downstream's effect. The base records events in the inbox and does nothing else."""

    name = "null"
    # The folder of Alembic revisions for the tables `define_tables` adds: their own branch,
    # labelled with `name`. None: the tables are created when missing and never changed.
    revisions: Path | None = None

    def __init__(self, spec: DownstreamSpec) -> None:
        self.spec = spec
        self.metadata = MetaData()
        store_tables(self.metadata)
        self.define_tables(self.metadata)

    def define_tables(self, metadata: MetaData) -> None:
        """Add the handler's own tables."""

    async def check(self, event: AnyEvent, attempts: int) -> None:
        """Do the event's work outside the transaction; raise to retry or dead-letter it."""

    async def before_batch(self, events: Sequence[AnyEvent]) -> None:
        """Work done once per batch (a warehouse's load), outside the transaction."""

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Apply a batch's effects inside the store transaction."""


def handler_class(downstream: str, named: str | None) -> type[Handler] | None:
    """The handler the file names (`module:Class`), else the one registered under the entry
    point group by the downstream's name, else None."""
    if named is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == downstream]
        if not found:
            return None
        named = found[0].value
    module_name, _, class_name = named.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise HandlerNotFound(
            f"{downstream}: cannot load handler {named!r}: {exc} (is its package installed, "
            "or its folder on PYTHONPATH?)"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Handler)):
        raise HandlerNotFound(f"{downstream}: {named!r} is not a subclass of Handler")
    return loaded


def handler_for(downstream: str, spec: DownstreamSpec) -> Handler:
    """The downstream's handler (the base `Handler`, which only records, when none is named)."""
    return (handler_class(downstream, spec.handler) or Handler)(spec)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Handler",
    "HandlerNotFound",
    "HandlerTimeout",
    "NonRetryableError",
    "TransientError",
    "Tx",
    "handler_class",
    "handler_for",
    "insert_sql",
    "upsert_sql",
]
