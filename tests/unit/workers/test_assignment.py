"""Shard assignment over a downstream's processes: join, leave, crash, flapping."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.ownership.assignment import Member, moves, settled, share

TTL, SETTLE = 3.0, 2.0


@dataclass
class Cluster:
    """Members running rounds against one lease table (a dict), one second a round."""

    shards: list[int]
    now: float = 0.0
    members: dict[str, Member] = field(default_factory=dict)
    owners: dict[int, str | None] = field(default_factory=dict)
    lease_until: dict[int, float] = field(default_factory=dict)
    moved: int = 0

    def join(self, name: str) -> None:
        self.members[name] = Member(name, self.now, self.now)

    def crash(self, name: str) -> None:
        del self.members[name]  # no heartbeat, no release: its leases run out

    def leave(self, name: str) -> None:
        for s, owner in self.owners.items():
            if owner == name:
                self.owners[s] = None
                self.moved += 1
        del self.members[name]

    def round(self) -> None:
        self.now += 1.0
        for s, until in self.lease_until.items():
            if until < self.now:
                self.owners[s] = None
        for name in sorted(self.members):
            member = self.members[name]
            self.members[name] = Member(name, member.joined_at, self.now)  # heartbeat
            live = settled(self.members.values(), self.now, TTL, SETTLE)
            m = moves(name, self.shards, live, self.owners)
            for s in m.release:
                assert self.owners[s] == name
                self.owners[s] = None
                self.moved += 1
            for s in m.acquire:
                if self.owners.get(s) is None:  # the conditional update of the store
                    self.owners[s] = name
            for s, owner in self.owners.items():
                if owner == name:
                    self.lease_until[s] = self.now + TTL

    def rounds(self, n: int) -> None:
        for _ in range(n):
            self.round()

    def held(self) -> dict[str, int]:
        out = {m: 0 for m in self.members}
        for owner in self.owners.values():
            if owner is not None:
                out[owner] = out.get(owner, 0) + 1
        return out


def test_shares_are_as_even_as_the_counts_allow() -> None:
    members = ["a", "b", "c"]
    assert [share(4, members, m) for m in members] == [2, 1, 1]
    assert [share(8, members, m) for m in members] == [3, 3, 2]
    assert share(4, members, "stranger") == 0
    assert sum(share(64, members, m) for m in members) == 64


def test_processes_that_join_split_the_shards() -> None:
    c = Cluster(list(range(4)))
    c.join("a")
    c.rounds(4)
    assert c.held() == {"a": 4}
    c.join("b")
    c.join("c")
    c.rounds(5)
    assert sorted(c.held().values()) == [1, 1, 2]
    assert all(o is not None for o in c.owners.values())


def test_a_process_that_leaves_hands_its_shards_to_the_others() -> None:
    c = Cluster(list(range(4)))
    for m in ("a", "b", "c"):
        c.join(m)
    c.rounds(5)
    c.leave("b")
    c.rounds(2)
    assert sorted(c.held().values()) == [2, 2]


def test_a_crashed_process_loses_its_shards_when_its_leases_run_out() -> None:
    c = Cluster(list(range(6)))
    for m in ("a", "b", "c"):
        c.join(m)
    c.rounds(5)
    c.crash("c")
    c.rounds(1)
    assert "c" in c.owners.values()  # its leases still run
    c.rounds(int(TTL) + 2)
    assert c.held() == {"a": 3, "b": 3}


def test_a_flapping_process_takes_nothing_and_moves_nothing() -> None:
    c = Cluster(list(range(4)))
    c.join("a")
    c.join("b")
    c.rounds(5)
    before, moved = dict(c.owners), c.moved
    for _ in range(6):  # up for one second, gone for one, again and again
        c.join("flappy")
        c.round()
        c.crash("flappy")
        c.round()
    assert c.owners == before and c.moved == moved


def test_a_member_over_its_share_gives_up_its_highest_shards() -> None:
    m = moves("a", [0, 1, 2, 3], ["a", "b"], {0: "a", 1: "a", 2: "a", 3: None})
    assert m.release == (2,) and m.acquire == ()
    m = moves("b", [0, 1, 2, 3], ["a", "b"], {0: "a", 1: "a", 2: None, 3: None})
    assert m.release == () and m.acquire == (2, 3)
    m = moves("x", [0, 1], ["a"], {0: "x", 1: "a"})  # stale: not a settled member
    assert m.release == (0,) and m.acquire == ()
