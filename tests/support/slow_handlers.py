"""Handlers for tests, named in a test's topology file like any user's handler."""

from __future__ import annotations

import time
from collections.abc import Sequence

from events import AnyEvent
from workers.api import Tx
from workers.handlers.inventory import InventoryHandler

WRITE_SECONDS_PER_EVENT = 0.05


class SlowInventory(InventoryHandler):
    """inventory whose writes hold the store's transaction 50 ms per event."""

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Reserve stock as inventory does, slowly."""
        time.sleep(WRITE_SECONDS_PER_EVENT * len(events))
        super().write(tx, events)
