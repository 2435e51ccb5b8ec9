"""Coverage a machine must run: what `BUS_REQUIRE` names fails instead of skipping.

`scripts/test` names everything the machine it runs on can do (`tls`, `broker-control`,
`cluster`) so that CI cannot turn coverage off by itself; a run elsewhere skips what it cannot
do and says why in the summary.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "BUS_REQUIRE"


def required(what: str) -> bool:
    """Whether this run must cover `what`."""
    return what in {w.strip() for w in os.environ.get(REQUIRE_ENV, "").split(",")}


def skip_or_fail(what: str, reason: str) -> NoReturn:
    """Skip with the reason, or fail when this run must cover `what`."""
    if required(what):
        pytest.fail(f"{reason} ({REQUIRE_ENV} names {what!r}: this machine must run it)")
    pytest.skip(reason)
