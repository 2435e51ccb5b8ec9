"""SKU markers the simulator plants and the simulated handlers obey.

`FLAKY<n>-<sku>` fails transiently n times per downstream, then succeeds;
`POISON-<sku>` fails with a permanent business error;
`CRASH-<sku>` kills the worker process handling it (SIGKILL), every time: the poison that no
handler can catch, which only the broker's delivery limit stops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

POISON_PREFIX = "POISON-"
CRASH_PREFIX = "CRASH-"
_FLAKY = re.compile(r"^FLAKY(\d{1,2})-")


@dataclass(frozen=True)
class SkuBehaviour:
    """How a simulated handler treats a SKU."""

    poison: bool = False
    transient_failures: int = 0
    crash: bool = False


def flaky_sku(sku: str, failures: int) -> str:
    """Mark sku as failing transiently `failures` times."""
    if not 1 <= failures <= 99:
        raise ValueError("failures must be between 1 and 99")
    return f"FLAKY{failures}-{sku}"


def poison_sku(sku: str) -> str:
    """Mark sku as a permanent business error."""
    return POISON_PREFIX + sku


def behaviour_of(sku: str) -> SkuBehaviour:
    """Read the marker of a SKU."""
    if sku.startswith(POISON_PREFIX):
        return SkuBehaviour(poison=True)
    if sku.startswith(CRASH_PREFIX):
        return SkuBehaviour(crash=True)
    if m := _FLAKY.match(sku):
        return SkuBehaviour(transient_failures=int(m.group(1)))
    return SkuBehaviour()
