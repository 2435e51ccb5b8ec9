"""Shrinking a downstream live: stop routing to its newest shards, let them drain, delete them.

Unbinding a shard from the consistent-hash exchange stops new events reaching it; its
orders' next events go to the remaining shards, where the workers' ordering guard defers
each until the events still in the old shard are applied. Once unbound, a shard can only
lose messages (retries, redrives and replays go through the hash exchange), so one broker
sample taken after the unbind showing nothing ready and nothing unacknowledged means it is
empty for good. Only then is it deleted: quorum queues cannot be deleted "if empty", and a
queue deleted while a consumer holds unacked messages loses them. The newest shard goes
first: removing the most recently added binding moves only its own orders, while removing
an older one renumbers every later bucket of the ring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker.management import ManagementClient
from broker.objects import BindingDef
from topology import names
from topology.compile import SHARD_WEIGHT
from topology.plan import Reshard

DRAIN_TIMEOUT = 600.0
_POLL_SECONDS = 1.0


class DrainTimeout(Exception):
    """Shards still held messages when the wait ran out (they stay unbound; rerun apply)."""


def shrink(
    client: ManagementClient,
    vhost: str,
    step: Reshard,
    timeout: float = DRAIN_TIMEOUT,
    on_wait: Callable[[str, int], None] | None = None,
) -> list[str]:
    """Unbind, drain and delete the shards going away; returns the queues deleted."""
    d = step.downstream
    for index in step.shrinking:
        shard = names.shard(d, index)
        client.unbind(vhost, BindingDef(names.hash_exchange(d), shard, "queue", SHARD_WEIGHT))
    deleted = []
    deadline = time.monotonic() + timeout
    for index in step.shrinking:
        shard = names.shard(d, index)
        _wait_drained(client, vhost, shard, deadline, on_wait)
        client.delete("queues", vhost, shard)
        deleted.append(shard)
    return deleted


def _wait_drained(
    client: ManagementClient,
    vhost: str,
    queue: str,
    deadline: float,
    on_wait: Callable[[str, int], None] | None,
) -> None:
    """Until a sample newer than the first one seen shows no message, ready or unacked."""
    first: int | None = None
    while True:
        stamp, messages = _latest(client.queue_lengths(vhost, queue))
        if stamp is not None:
            if first is None:
                first = stamp
            elif stamp > first and messages == 0:
                return
        if on_wait is not None:
            on_wait(queue, messages)
        if time.monotonic() > deadline:
            raise DrainTimeout(
                f"{queue} still holds {messages} message(s): it stays unbound, and the next "
                "`apply` goes on draining it (are the downstream's workers running?)"
            )
        time.sleep(_POLL_SECONDS)


def _latest(queue: dict[str, Any] | None) -> tuple[int | None, int]:
    """The newest sample's time and its count of messages (ready + unacknowledged)."""
    if not queue:
        return None, 0
    total = (queue.get("messages_details") or {}).get("samples") or []
    unacked = (queue.get("messages_unacknowledged_details") or {}).get("samples") or []
    if not total or not unacked:
        return None, int(queue.get("messages") or 0)
    newest = max(total, key=lambda s: s["timestamp"])
    same = [int(s["sample"]) for s in unacked if s["timestamp"] == newest["timestamp"]]
    if not same:  # the two series not sampled together: wait for one that is
        return None, int(newest["sample"])
    return int(newest["timestamp"]), max(int(newest["sample"]), same[0])
