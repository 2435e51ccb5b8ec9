"""Where a vhost's replicated queues live on a cluster: members, leaders, and their balance."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.management import ManagementClient
from topology.spec import ReplicationSpec

BALANCE_WITHIN = 20.0  # seconds apply waits for the broker to move leaders


@dataclass(frozen=True)
class Replicas:
    """One queue's Raft members and leader, as the management API reports them (~5 s late)."""

    queue: str
    leader: str | None
    members: tuple[str, ...]
    online: tuple[str, ...]
    wanted: int  # members the file asks for, capped by the cluster's nodes

    @property
    def short(self) -> bool:
        """Fewer live members than the file asks for (a node down, or created too small)."""
        return len(self.online) < self.wanted

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "leader": self.leader,
            "members": list(self.members),
            "online": list(self.online),
            "wanted": self.wanted,
            "short": self.short,
        }


def wanted_members(replication: ReplicationSpec, cluster_nodes: int) -> int:
    """How many members a new queue gets: the file's group size, at most the nodes there are."""
    return min(replication.group_size or cluster_nodes, cluster_nodes)


def replicas_of(queue: dict[str, Any], wanted: int) -> Replicas:
    """Read one queue object of the management API (a stream names its leader `node`)."""
    return Replicas(
        queue=str(queue.get("name", "")),
        leader=queue.get("leader")
        or (queue.get("node") if queue.get("type") == "stream" else None),
        members=tuple(sorted(queue.get("members") or ())),
        online=tuple(sorted(queue.get("online") or ())),
        wanted=wanted,
    )


def running_nodes(client: ManagementClient) -> list[str]:
    """The names of the cluster's running nodes."""
    return sorted(n["name"] for n in client.nodes() if n.get("running"))


def leader_counts(queues: Iterable[dict[str, Any]], nodes: Iterable[str]) -> Counter[str]:
    """Quorum queue leaders per running node (zero counted too)."""
    counts: Counter[str] = Counter({node: 0 for node in nodes})
    for q in queues:
        leader = str(q.get("leader"))
        if q.get("type") == "quorum" and leader in counts:
            counts[leader] += 1
    return counts


def balanced(counts: Counter[str]) -> bool:
    """No node leads more than one queue more than another."""
    return not counts or max(counts.values()) - min(counts.values()) <= 1


def cluster_leaders(client: ManagementClient, nodes: Iterable[str]) -> Counter[str]:
    """Quorum leaders per running node over every vhost: what the broker's rebalance evens."""
    return leader_counts(client.list_objects("queues", None), nodes)


def balance_leaders(
    client: ManagementClient, within: float = BALANCE_WITHIN
) -> tuple[Counter[str], Counter[str]] | None:
    """Rebalance quorum leaders when they lean on some node; (before, after), or None on a
    single node or when they are balanced already. The broker evens the count per node over
    all vhosts (one vhost's leaders may stay uneven) and may take longer than `within` under
    load; it goes on after this returns."""
    nodes = running_nodes(client)
    if len(nodes) < 2:
        return None
    before = cluster_leaders(client, nodes)
    if balanced(before):
        return None
    client.rebalance_queues()
    deadline = time.monotonic() + within
    after = before
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = cluster_leaders(client, nodes)
        if balanced(after):
            break
    return before, after
