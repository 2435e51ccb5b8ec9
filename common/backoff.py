"""Backoff as a pure function: exponential, capped, with full jitter."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None
) -> float:
    """Seconds before retry number `attempt` (1-based): jittered in the top half of the ceiling."""
    if attempt < 1:
        return 0.0
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    return (rng or random).uniform(ceiling / 2, ceiling)
