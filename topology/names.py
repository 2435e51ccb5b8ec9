"""Broker object names derived from a downstream's name: the naming scheme of DESIGN.md."""

from __future__ import annotations

import re


def hash_exchange(downstream: str) -> str:
    """The downstream's consistent-hash exchange."""
    return downstream


def shard(downstream: str, index: int) -> str:
    """Shard queue number index of the downstream."""
    return f"{downstream}.{index}"


def shard_pattern(downstream: str) -> str:
    """A regex matching exactly the downstream's shard queues."""
    return rf"^{re.escape(downstream)}\.\d+$"


def retry_exchange(downstream: str) -> str:
    """The direct exchange routing to the retry tiers by tier name."""
    return f"{downstream}.retry"


def retry_queue(downstream: str, tier: str) -> str:
    """The delay queue of one retry tier."""
    return f"{downstream}.retry.{tier}"


def dead_exchange(downstream: str) -> str:
    """The fanout exchange in front of the final DLQ."""
    return f"{downstream}.dead"


def dlq(downstream: str) -> str:
    """The final dead-letter queue."""
    return f"{downstream}.dlq"
