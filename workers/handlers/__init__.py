"""The shipped downstreams' handlers, written against the public API (`workers.api`) only."""

from __future__ import annotations

from pathlib import Path

# The shipped handlers' migrations, a folder each.
SHIPPED_REVISIONS = Path(__file__).parent / "revisions"
