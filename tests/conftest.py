"""Suite-wide setup: the shared fixtures, and code under test logging as in production."""

from __future__ import annotations

from common.logs import configure_logging

pytest_plugins = ["tests.support.fixtures"]

# Unconfigured, structlog prints every level to stdout, into the output CLI tests read.
configure_logging("INFO", json=False)
