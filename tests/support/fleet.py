"""The processes of a whole-bus test: the relay and workers, each killable and restartable,
with their counters scraped from every incarnation."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import eventually
from tests.support.processes import free_port

# Worker counters scraped from every process incarnation; the last half second before a
# SIGKILL is lost, so the printed sums are lower bounds.
SCRAPED = {
    "bus_worker_redelivered": "redeliveries",
    "bus_worker_duplicates": "duplicates caught",
    "bus_worker_deferred": "deferrals",
    "bus_worker_retried": "retries",
}


@dataclass
class Fleet:
    """The relay and worker processes (`relay`, a downstream, or `all`), by name."""

    env: dict[str, str]
    downstreams: list[str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    incarnation: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    figures: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    rounds: int = 0  # scrapes completed

    def start(self, name: str) -> None:
        port = self.ports.setdefault(name, free_port())
        metrics = ["--metrics-port", str(port)]
        args = (
            ["producer", "relay", *metrics]
            if name == "relay"
            else ["simulation", "workers", name, *metrics]
        )
        self.incarnation[name] += 1
        self.logs.mkdir(exist_ok=True)
        with (self.logs / f"{name}.{self.incarnation[name]}.log").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *args], env=self.env, stderr=out
            )

    def assert_alive(self) -> None:
        """Only the chaos may stop a process: one that exited by itself is a failure."""
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"processes exited by themselves (exit codes): {dead}"

    def kill(self, name: str) -> None:
        self.assert_alive()
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)
        self.faults.append(f"SIGKILL {name}")
        self.start(name)

    async def scrape(self, until: asyncio.Event) -> None:
        """Keep each worker incarnation's latest counters."""
        async with httpx.AsyncClient(timeout=1) as http:
            while not until.is_set():
                for name in self.downstreams:
                    key = (name, self.incarnation[name])
                    try:
                        text = (await http.get(f"http://127.0.0.1:{self.ports[name]}/")).text
                    except httpx.HTTPError:
                        continue
                    self.figures[key] = _counters(text)
                self.rounds += 1
                await asyncio.sleep(0.5)

    async def scraped_again(self) -> None:
        """Wait until one whole scrape round has begun and ended after this call."""
        target = self.rounds + 2
        await eventually(lambda: self.rounds >= target, every=0.1, what="a fresh scrape")

    def totals(self) -> dict[str, int]:
        """Scraped counters summed over every incarnation of every worker."""
        out: Counter[str] = Counter()
        for sample in self.figures.values():
            out.update({k: int(v) for k, v in sample.items()})
        return dict(out)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _counters(text: str) -> dict[str, float]:
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name in SCRAPED:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[SCRAPED[family.name]] += sample.value
    return dict(out)
