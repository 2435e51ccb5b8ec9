"""The handler API: what a downstream's own code provides (see docs/handlers.md).

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

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import MetaData

from events import AnyEvent
from topology.spec import DownstreamSpec
from workers.tables import store_tables
from workers.tx import Tx

# The shipped handlers' migrations, a folder each.
SHIPPED_REVISIONS = Path(__file__).parent / "revisions"


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
