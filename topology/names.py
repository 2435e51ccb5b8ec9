"""Broker object names derived from a downstream's name: the naming scheme every tool shares."""

from __future__ import annotations

import re


def hash_exchange(downstream: str) -> str:
    """The downstream's consistent-hash exchange."""
    return downstream


def shard(downstream: str, index: int | str) -> str:
    """Shard queue number index of the downstream ("{shard}": the name as a template)."""
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


_WORD = r"[a-z][a-z0-9_]{0,39}"  # a downstream's name, as the file allows it
_TIER = r"[a-z0-9][a-z0-9_-]{0,19}"  # a retry tier's name
_SCHEME = {
    "queue": re.compile(rf"^{_WORD}\.(\d+|retry\.{_TIER}|dlq)$"),
    "exchange": re.compile(rf"^{_WORD}(\.retry|\.dead)?$"),
    "policy": re.compile(rf"^{_WORD}\.(shards|retry\.{_TIER}|dlq)$"),
}
# A downstream's exchanges by the end of their name; a bare word is only ours as a hash exchange.
_EXCHANGE_TYPES = {".retry": "direct", ".dead": "fanout", "": "x-consistent-hash"}


def owned(kind: str, name: str, entry: set[str], exchange_type: str | None = None) -> bool:
    """Whether an object follows the bus's naming scheme: one of a downstream's (of this file
    or an older one), or an entry object named in `entry`. Prune deletes nothing else."""
    if name in entry:
        return True
    scheme = _SCHEME.get(kind)
    if scheme is None or not (found := scheme.match(name)):
        return False
    if kind == "exchange":
        return exchange_type == _EXCHANGE_TYPES[found.group(1) or ""]
    return True
