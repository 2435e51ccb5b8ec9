"""Replicas: members, leaders and their balance, read from management API objects."""

from __future__ import annotations

from collections import Counter

from topology.replicas import balanced, leader_counts, replicas_of, wanted_members
from topology.spec import ReplicationSpec

NODES = ["bus1@localhost", "bus2@localhost", "bus3@localhost"]


def test_wanted_members_is_capped_by_the_nodes() -> None:
    assert wanted_members(ReplicationSpec(group_size=3), 3) == 3
    assert wanted_members(ReplicationSpec(group_size=5), 3) == 3
    assert wanted_members(ReplicationSpec(group_size=3), 1) == 1
    assert wanted_members(ReplicationSpec(group_size=None), 5) == 5


def test_a_quorum_queue_missing_a_live_member_is_short() -> None:
    queue = {
        "name": "inventory.0",
        "type": "quorum",
        "leader": NODES[1],
        "members": [NODES[2], NODES[0], NODES[1]],
        "online": [NODES[1], NODES[0]],
    }
    r = replicas_of(queue, 3)
    assert (r.queue, r.leader, r.members, r.online) == (
        "inventory.0",
        NODES[1],
        tuple(NODES),
        (NODES[0], NODES[1]),
    )
    assert r.short
    assert r.as_dict()["short"] is True
    assert not replicas_of({**queue, "online": NODES}, 3).short


def test_a_queue_created_smaller_than_asked_is_short_with_every_member_live() -> None:
    queue = {"name": "q", "type": "quorum", "leader": NODES[0], "members": NODES[:1]}
    r = replicas_of({**queue, "online": NODES[:1]}, 3)
    assert r.short and set(r.members) == set(r.online)


def test_a_stream_names_its_leader_node() -> None:
    stream = {"name": "orders.log", "type": "stream", "node": NODES[2], "members": NODES}
    assert replicas_of({**stream, "online": NODES}, 3).leader == NODES[2]
    # a quorum queue's `node` is where it was declared, not its leader
    quorum = {"name": "q", "type": "quorum", "node": NODES[2], "members": NODES}
    assert replicas_of({**quorum, "online": NODES}, 3).leader is None


def test_leader_counts_include_nodes_leading_nothing_and_only_quorum_queues() -> None:
    queues = [
        {"type": "quorum", "leader": NODES[0]},
        {"type": "quorum", "leader": NODES[0]},
        {"type": "quorum", "leader": NODES[1]},
        {"type": "stream", "leader": NODES[2]},
        {"type": "classic", "node": NODES[2]},
        {"type": "quorum", "leader": "gone@elsewhere"},
    ]
    assert leader_counts(queues, NODES) == Counter({NODES[0]: 2, NODES[1]: 1, NODES[2]: 0})


def test_balanced_allows_a_difference_of_one() -> None:
    assert balanced(Counter({"a": 14, "b": 14, "c": 13}))
    assert not balanced(Counter({"a": 7, "b": 21, "c": 13}))
    assert not balanced(Counter({"a": 2, "b": 0}))
    assert balanced(Counter())
