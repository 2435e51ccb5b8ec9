"""Suite-wide setup: code under test logs as in production (structlog, INFO, to stderr)."""

from __future__ import annotations

from topology.logs import configure_logging

# Unconfigured, structlog prints every level to stdout, into the output CLI tests read.
configure_logging("INFO", json=False)
