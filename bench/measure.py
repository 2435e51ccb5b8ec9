"""How a drain is measured: the steady middle of it, in events per second and CPU per event.

Every consumer under test runs as a process of its own. The figures come from the window
between 20% and 80% of its work, so neither Python's start-up (imports, connecting) nor the
tail of the last batches count; CPU is the processes' user + system time over the same
window (Linux /proc for the bus's process tree, `getrusage` for the peers measuring
themselves). CPU per event is the steadiest figure: report it beside every rate.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOW, HIGH = 0.2, 0.8
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Mark:
    """Work done so far, and the CPU spent on it, at one moment."""

    t: float
    done: int
    cpu: float


@dataclass(frozen=True)
class Steady:
    """The steady window of a drain."""

    events_per_s: float  # per downstream: units of work / seconds / downstreams
    cpu_us_per_event: float  # per unit of work (an event applied by one downstream)
    window_s: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded."""
        return {k: round(v, 1) for k, v in asdict(self).items()}


def steady(low: Mark, high: Mark, downstreams: int = 1) -> Steady:
    """The rate and CPU per event between two marks."""
    done, seconds = high.done - low.done, high.t - low.t
    if done <= 0 or seconds <= 0:
        raise ValueError("the window holds no work: the drain was too small to measure")
    rate = done / seconds / downstreams
    return Steady(rate, (high.cpu - low.cpu) / done * 1e6, seconds)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system seconds) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu(root: int) -> float:
    """User + system seconds of a process and every live descendant (Linux)."""
    parents: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat
    total, frontier = 0.0, {root}
    while frontier:
        total += sum(parents[p][1] for p in frontier if p in parents)
        frontier = {p for p, (ppid, _) in parents.items() if ppid in frontier}
    return total


def own_cpu() -> float:
    """User + system seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SelfMarks:
    """A peer consumer measuring itself: marks at 20% and 80% of `total`, printed as JSON."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.marks: list[Mark] = []
        self._next = LOW * total
        self.first: float | None = None
        self.last: float | None = None

    def hit(self, n: int = 1) -> bool:
        """Count n units of work; True once all are done."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.done += n
        if self.done >= self._next and len(self.marks) < 2:
            self.marks.append(Mark(now, self.done, own_cpu()))
            self._next = HIGH * self.total if len(self.marks) == 1 else float("inf")
        return self.done >= self.total

    def report(self) -> str:
        """The two marks and the span from the first unit of work to the last, as JSON."""
        span = {"first": self.first, "last": self.last, "done": self.done}
        return json.dumps({"marks": [asdict(m) for m in self.marks], "span": span})


@dataclass(frozen=True)
class Report:
    """What a peer measured of itself."""

    low: Mark
    high: Mark
    span_rate: float  # units of work per second, from the first to the last

    def steady(self, downstreams: int = 1) -> Steady:
        """Its steady window."""
        return steady(self.low, self.high, downstreams)


def parse_report(text: str) -> Report:
    """The report a peer printed (its last line of output)."""
    loaded = json.loads(text.strip().splitlines()[-1])
    low, high = (Mark(**m) for m in loaded["marks"])
    span = loaded["span"]
    rate = span["done"] / max(span["last"] - span["first"], 1e-6)
    return Report(low, high, rate)


def parse_marks(text: str) -> tuple[Mark, Mark]:
    """The marks a peer printed (its last line of output)."""
    report = parse_report(text)
    return report.low, report.high
