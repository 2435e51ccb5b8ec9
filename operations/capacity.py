"""The catch-up arithmetic: how many processes and shards a backlog needs to clear in time."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from topology.plan import STABLE_RING_SHARDS
from topology.spec import MAX_SHARDS


@dataclass(frozen=True)
class Capacity:
    """What clearing a backlog within a deadline takes."""

    backlog: int
    within_s: float
    arriving_per_s: float  # what keeps arriving meanwhile (the live publish rate)
    per_process: float  # measured (or given) events/s one process applies
    processes_now: int
    shards_now: int

    @property
    def needed_per_s(self) -> float:
        """Net rate: the backlog over the deadline, plus what keeps arriving."""
        return self.backlog / self.within_s + self.arriving_per_s

    @property
    def processes(self) -> int:
        """Processes it takes at the measured rate each."""
        return max(1, math.ceil(self.needed_per_s / self.per_process))

    @property
    def shards(self) -> int:
        """Shards it takes: each shard feeds one process at a time."""
        return max(self.shards_now, self.processes)

    def replicas(self) -> dict[str, int]:
        """The same plan in an autoscaler's terms (deploy/k8s: KEDA's ScaledObject): at least
        one replica, at most one per shard, and what the backlog takes."""
        return {"min": 1, "max": self.shards, "wanted": min(self.processes, self.shards)}

    def caps(self) -> list[str]:
        """What limits the plan, in words."""
        out = []
        if self.processes > self.shards_now:
            out.append(
                f"shards: {self.shards_now} now, and a shard feeds one process at a time; raise "
                f"`shards` to {min(self.shards, MAX_SHARDS)} and apply (live)"
            )
        if self.processes > MAX_SHARDS:
            best = MAX_SHARDS * self.per_process
            hours = self.backlog / max(best - self.arriving_per_s, 1) / 3600
            out.append(
                f"the file allows {MAX_SHARDS} shards: at most {best:,.0f} events/s, "
                f"{hours:,.1f} h for this backlog"
            )
        if self.shards > STABLE_RING_SHARDS:
            out.append(
                f"more than {STABLE_RING_SHARDS} shards: after a broker restart most orders move "
                "once (they wait behind their earlier events)"
            )
        out.append("cores: a process uses one; the broker needs its own share of them")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {
            **asdict(self),
            "needed_per_s": round(self.needed_per_s, 1),
            "processes": self.processes,
            "shards": self.shards,
            "replicas": self.replicas(),
            "caps": self.caps(),
        }
